"""Latency, throughput, speed–quality and peers of one trained MRI run (see :mod:`flowcs.bench`)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .. import export as E
from ..experiments import get_experiment
from ..experiments.context import load_run
from ..operators.fft import complex_abs
from ..rng import derive
from .serve import serving_rss
from .timing import load_average, percentiles, time_calls

__all__ = ["bench_run", "bench_image_run"]


def mix_seed(*parts: int) -> torch.Generator:
    """A generator seeded from the benchmark's seed and the purpose of the draw."""
    return torch.Generator().manual_seed(derive("bench", *parts))


def bench_run(run_dir: str | Path, args, log=print) -> dict:
    """Every measurement of one MRI run directory (see the module doc)."""
    run_dir = Path(run_dir)
    ctx = load_run(run_dir, args.device, args.data, experiments=("mri-4x", "mri-8x"))
    dev = ctx.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    c = ctx.cfg
    exp = get_experiment(ctx.experiment)
    evaluation = exp.setup(ctx)
    setup = evaluation.extras["geometry"]
    split = evaluation.extras["split"]
    op, k, size = setup.operator, setup.k, setup.size
    policy = exp.flow_policy(ctx)
    policy.model.to(dev)
    n_in = max(1, min(len(evaluation.test), max(args.quality_images, 8)))
    x = evaluation.test.x[:n_in]  # normalised complex test images (B, 2, S, S)
    acq1 = setup.acquired(1)
    # the LF k-space of each test image, with the experiment's k-space noise (evaluation protocol)
    y_lf = torch.cat([op.measure(x[i:i + 1], acq1, noisy=True, generator=mix_seed(args.seed, 1, i))
                      for i in range(n_in)])
    y_dev, acq_dev = y_lf.to(dev), acq1.to(dev)
    out: dict = {"experiment": ctx.experiment, "run_dir": str(run_dir), "image_size": [size, size], "columns": size,
                 "lines": {"total": setup.total, "low_frequency": setup.n_lf, "policy": k},
                 "flow": {"steps": policy.steps, "samples": policy.samples, "hidden": c.flow.hidden,
                          "layers": c.flow.layers, "encoder_widths": list(c.encoder.widths),
                          "encoder_bottleneck": c.encoder.bottleneck},
                 "inputs": f"LF k-space of the first {n_in} {split} images (noise {c.mri.noise_pct:g}%), cycled"}
    log(f"[{ctx.experiment}] {n_in} test k-spaces, {setup.n_lf} LF + {k} chosen of {size} lines; "
        f"load {load_average()}")

    # --- the exported policy, written and loaded back exactly as a server would
    tmp = Path(tempfile.mkdtemp(prefix="flowcs-bench-"))
    t0 = time.perf_counter()
    cfg = {"experiment": ctx.experiment, "run_dir": str(run_dir), "image_size": [size, size]}
    E.export_policy(policy, setup.lf, k, tmp / "policy.pt", cfg)
    exported = E.load_exported(tmp / "policy.pt", device=dev)
    out["export_s"] = round(time.perf_counter() - t0, 2)
    noises = [E.noise_for(1, policy.samples, size, seed=args.seed * 100_003 + i).to(dev) for i in range(64)]

    def call_exported(i):
        return exported.masks(y_dev[i % n_in:i % n_in + 1], noise=noises[i % 64])

    def call_training(i):
        j = i % n_in
        with torch.inference_mode():
            cond = complex_abs(op.zero_filled(y_dev[j:j + 1], acq_dev))
            return policy.propose(cond, k, acq_dev, torch.Generator().manual_seed(args.seed * 100_003 + i % 64))

    # same masks? (same noise: FlowPolicy draws x0 from the seeded CPU generator exactly like noise_for)
    same = sum(bool((call_exported(i).cpu() == call_training(i).cpu()).all()) for i in range(min(16, n_in * 2)))
    out["exported_masks_equal_training_code"] = f"{same}/{min(16, n_in * 2)}"

    # --- batch-1 latency: alternating blocks so that both see the same machine load
    log(f"[{ctx.experiment}] batch-1 latency: {args.runs} exported + {args.baseline_runs} training-code calls")
    call_exported(0)
    call_training(0)
    time_calls(call_exported, 0, args.warmup, sync)
    time_calls(call_training, 0, max(2, args.warmup // 3), sync)
    ew, ec, bw, bc = [], [], [], []
    blocks = max(1, min(args.runs, args.baseline_runs, 10))
    for b in range(blocks):
        n_e = args.runs // blocks + (1 if b < args.runs % blocks else 0)
        n_b = args.baseline_runs // blocks + (1 if b < args.baseline_runs % blocks else 0)
        off_e, off_b = len(ew), len(bw)
        w, cp = time_calls(lambda i, o=off_e: call_exported(o + i), n_e, 0, sync)
        ew += w
        ec += cp
        w, cp = time_calls(lambda i, o=off_b: call_training(o + i), n_b, 0, sync)
        bw += w
        bc += cp
    lat_e, lat_b = percentiles(ew), percentiles(bw)
    lat_e["cpu_p50_ms"], lat_b["cpu_p50_ms"] = percentiles(ec)["p50_ms"], percentiles(bc)["p50_ms"]
    out["latency_batch1"] = {"exported": lat_e, "training_code": lat_b,
                             "speedup_p50": round(lat_b["p50_ms"] / lat_e["p50_ms"], 2),
                             "load_during": load_average()}
    log(f"[{ctx.experiment}] exported p50 {lat_e['p50_ms']:.1f} ms p99 {lat_e['p99_ms']:.1f} ms "
        f"(cpu p50 {lat_e['cpu_p50_ms']:.1f}); training code p50 {lat_b['p50_ms']:.1f} ms")

    # --- component profile of the exported pipeline (eager modules of the same generator)
    gen = E.build_generator(policy, setup.lf, k).to(dev)
    with torch.inference_mode():
        y1 = y_dev[:1]
        cond = gen.condition(y1)
        feats = gen.features(cond)
        scores = gen.integrate(feats, noises[0])
        parts = {"zero_filled_condition": lambda i: gen.condition(y1), "encoder": lambda i: gen.features(cond),
                 "euler_steps": lambda i: gen.integrate(feats, noises[0]), "topk": lambda i: gen.topk(scores)}
        n_p = max(5, min(30, args.runs // 4))
        comp = {name: time_calls(fn, n_p, 2, sync) for name, fn in parts.items()}
        out["components_p50_ms"] = {name: percentiles(w)["p50_ms"] for name, (w, _) in comp.items()}
        out["components_cpu_p50_ms"] = {name: percentiles(c)["p50_ms"] for name, (_, c) in comp.items()}

    # --- throughput
    tp = {}
    for bs in [int(b) for b in str(args.batches).split(",") if b.strip()]:
        yb = y_dev[torch.arange(bs) % n_in]
        nb = E.noise_for(bs, policy.samples, size, seed=args.seed).to(dev)
        exported.masks(yb, noise=nb)
        reps, t0 = 0, time.perf_counter()
        while reps < 2 or (time.perf_counter() - t0 < 2.0 and reps < 200):
            exported.masks(yb, noise=nb)
            if sync:
                sync()
            reps += 1
        el = time.perf_counter() - t0
        tp[str(bs)] = {"masks_per_s": round(bs * reps / el, 2), "ms_per_call": round(1000 * el / reps, 2),
                       "calls": reps}
    out["throughput_exported"] = tp
    log(f"[{ctx.experiment}] throughput (masks/s): " + ", ".join(f"b{b} {v['masks_per_s']}" for b, v in tp.items()))

    # --- Euler steps: speed and quality
    out["steps"] = _steps_table(ctx, setup, evaluation, policy, x, args, dev, sync, log)

    # --- peers in the same run
    flow_ms = lat_e["p50_ms"]
    out["peers"] = _peers(ctx, setup, x, args, dev, flow_ms, lat_b["p50_ms"], log)

    # --- serving memory
    if not args.no_rss:
        out["serving_rss"] = serving_rss(tmp / "policy.pt", min(200, max(20, args.runs)), args.threads,
                                         str(dev), run_dir)
        log(f"[{ctx.experiment}] serving peak RSS: {out['serving_rss']}")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return out


def _steps_table(ctx, setup, evaluation, policy, x, args, dev, sync, log) -> dict:
    """Latency and mask quality (the run's MoDL and metrics) of the exported policy per Euler step count."""
    steps_list = [int(s) for s in str(args.steps).split(",") if s.strip()]
    n_q = min(args.quality_images, x.shape[0])
    task = evaluation.task
    op, k, size = setup.operator, setup.k, setup.size
    acq = setup.acquired(n_q, dev) if n_q else None
    xq = x[:n_q].to(dev)
    seeds = 2 if n_q else 0
    table: dict = {}
    masks_at: dict[int, list[torch.Tensor]] = {}
    for s in steps_list:
        gen = E.script(E.build_generator(policy, setup.lf, k, steps=s).to(dev))
        noise1 = E.noise_for(1, policy.samples, size, seed=args.seed).to(dev)
        y1 = op.measure(x[:1], setup.acquired(1), noisy=False).to(dev)
        with torch.inference_mode():
            wall, cpu = time_calls(lambda i, g=gen, a=y1, b=noise1: g(a, b), max(10, args.runs // 4), 3, sync)
        row = {"latency_batch1": {**percentiles(wall), "cpu_p50_ms": percentiles(cpu)["p50_ms"]}}
        if n_q:
            vals: dict[str, list[float]] = {"ssim": [], "psnr": []}
            masks_at[s] = []
            for r in range(seeds):
                y = op.measure(xq, acq, noisy=True, generator=mix_seed(args.seed, 7, r))
                noise = E.noise_for(n_q, policy.samples, size, seed=args.seed * 1009 + r).to(dev)
                with torch.inference_mode():
                    mask = gen(y, noise)
                masks_at[s].append(mask.cpu())
                yf = op.measure(xq, mask, noisy=True, generator=mix_seed(args.seed, 8, r))
                with torch.inference_mode():
                    pred = task.predict(op.zero_filled(yf, mask), op.mask_to_image(mask))
                tgt, rows = evaluation.test.y[:n_q].to(dev), torch.arange(n_q)
                vals["ssim"] += evaluation.metrics["ssim"](pred, tgt, rows).tolist()
                vals["psnr"] += evaluation.metrics["psnr"](pred, tgt, rows).tolist()
            row["ssim_mean"] = round(sum(vals["ssim"]) / len(vals["ssim"]), 4)
            row["psnr_mean"] = round(sum(vals["psnr"]) / len(vals["psnr"]), 3)
            row["quality_images"], row["quality_draws"] = n_q, seeds
        table[str(s)] = row
        log(f"[{ctx.experiment}] {s} Euler steps: p50 {row['latency_batch1']['p50_ms']:.1f} ms"
            + (f", SSIM {row['ssim_mean']:.4f}" if n_q else ""))
    ref = max(masks_at) if masks_at else None
    for s in masks_at:
        same = sum(int((a == b).all(dim=1).sum()) for a, b in zip(masks_at[s], masks_at[ref]))
        table[str(s)][f"masks_equal_to_{ref}_steps"] = f"{same}/{n_q * seeds}"
    return table


def _peers(ctx, setup, x, args, dev, flow_ms: float, flow_training_ms: float, log) -> dict:
    """ADS and A-DPS timed per acquired line in the same process (trained weights when the run has them)."""
    from ..config import from_dict, merge, to_dict
    from ..experiments.compare_config import SMOKE_MRI, CompareConfig
    from ..policies.adps import ADPSNet, ADPSPolicy
    from ..policies.ads import ADSPolicy, ImagePriorNet
    from ..training.checkpoint import load_checkpoint

    wanted = [p.strip() for p in str(args.peers).split(",") if p.strip()]
    out: dict = {"flow_ms_per_line": round(flow_ms / setup.k, 4),
                 "flow_training_code_ms_per_line": round(flow_training_ms / setup.k, 4),
                 "note": "time per acquired line = time to choose the k policy lines of one image / k (batch 1)"}
    if not wanted:
        return out
    cc = ctx.cfg.compare
    if getattr(args, "smoke", False):
        cc = from_dict(CompareConfig, merge(to_dict(cc), SMOKE_MRI))
    op, k = setup.operator, setup.k
    x1 = x[:1].to(dev)
    acq = setup.acquired(1, dev)
    y_full = op.measure(x1, torch.ones_like(acq), noisy=True, generator=mix_seed(args.seed, 9))

    def observe(mask):
        return op.zero_filled(op.mask_to_image(mask).to(y_full.dtype) * y_full, mask)

    cond = observe(acq).pow(2).sum(1, keepdim=True).sqrt()

    def trained(stage: str, module, prefix: str) -> str:
        path = ctx.run_dir / f"{stage}.pt"
        if not path.is_file():
            return "untrained weights (no " + path.name + " in the run: timing only, same architecture and settings)"
        ck = load_checkpoint(path, stage)
        module.load_state_dict({kk[len(prefix):]: v for kk, v in ck["model"].items() if kk.startswith(prefix)})
        return f"trained ({path.name})"

    if "ads" in wanted:
        a = cc.ads
        std = float(x.std())
        torch.manual_seed(0)
        net = ImagePriorNet(2, a.widths, a.time_dim, 0.0, std)
        status = trained("compare-ads-prior", net, "model.")
        pol = ADSPolicy(net.to(dev).eval(), op, a.samples, a.steps, a.per_round, a.max_batch)
        times, cpus = [], []
        for i in range(max(1, args.ads_images)):
            xi = x[i % x.shape[0]:i % x.shape[0] + 1].to(dev)
            yi = op.measure(xi, torch.ones_like(acq), noisy=True, generator=mix_seed(args.seed, 10, i))

            def obs(mask, yi=yi):
                return op.zero_filled(op.mask_to_image(mask).to(yi.dtype) * yi, mask)

            c0, t0 = time.thread_time(), time.perf_counter()
            with torch.inference_mode():
                pol.propose(cond, k, acq, torch.Generator().manual_seed(i), observe=obs)
            times.append(1000 * (time.perf_counter() - t0))
            cpus.append(1000 * (time.thread_time() - c0))
        ms = sorted(times)[len(times) // 2]
        out["ads"] = {"ms_per_mask": round(ms, 1), "ms_per_line": round(ms / k, 3), "images": len(times),
                      "cpu_ms_per_mask": round(sorted(cpus)[len(cpus) // 2], 1),
                      "samples": a.samples, "steps": a.steps, "per_round": a.per_round, "widths": list(a.widths),
                      "weights": status}
        out["ads_over_flow_per_line"] = round((ms / k) / (flow_ms / k), 1)
        out["ads_over_flow_training_code_per_line"] = round((ms / k) / (flow_training_ms / k), 1)
        log(f"[{ctx.experiment}] ADS {ms:.0f} ms per mask ({ms / k:.1f} ms/line): "
            f"{out['ads_over_flow_per_line']}x the exported flow per line")
    if "adps" in wanted:
        a = cc.adps
        torch.manual_seed(0)
        net = ADPSNet(2, op.n_locations, a.widths, a.hidden, a.pool)
        pol = ADPSPolicy(net, op, a.steps, a.tau, a.relax, a.test_mode).to(dev).eval()
        status = trained(f"compare-adps-k{k}", pol, "peer.")
        with torch.inference_mode():
            wall, _ = time_calls(lambda i: pol.propose(cond, k, acq, torch.Generator().manual_seed(i),
                                                       observe=observe), max(10, args.runs // 4), 3)
        p = percentiles(wall)
        out["adps"] = {"latency_batch1": p, "ms_per_line": round(p["p50_ms"] / k, 4), "acquisitions": a.steps,
                       "weights": status}
        out["adps_over_flow_per_line"] = round(p["p50_ms"] / flow_ms, 3)
        log(f"[{ctx.experiment}] A-DPS p50 {p['p50_ms']:.1f} ms per mask: "
            f"{out['adps_over_flow_per_line']}x the exported flow")
    return out


def bench_image_run(run_dir: str | Path, args, log=print) -> dict:
    """Batch-1 latency of a pixel flow policy (mnist-classify): first random pixels → condition → flow → top-k."""
    from ..experiments.pixel import first_measurement
    from ..masks import rate_to_budget

    run_dir = Path(run_dir)
    ctx = load_run(run_dir, args.device, args.data, experiments=("mnist-classify",))
    exp = get_experiment(ctx.experiment)
    policy = exp.flow_policy(ctx)
    policy.model.to(ctx.device)
    setup = exp.setup(ctx)
    x = setup.test.x[:64].to(ctx.device)
    op = setup.operator
    budget = rate_to_budget(max(ctx.cfg.eval.rates), op.n_locations)
    k0 = ctx.cfg.flow.first_samples
    experiment = ctx.experiment

    def call(i):
        with torch.inference_mode():
            acq, cond = first_measurement(op, x[i % 64:i % 64 + 1], k0, torch.Generator().manual_seed(i))
            return policy.propose(cond, budget, acq, torch.Generator().manual_seed(i))

    wall, cpu = time_calls(call, max(20, args.runs // 2), args.warmup)
    p = percentiles(wall)
    p["cpu_p50_ms"] = percentiles(cpu)["p50_ms"]
    out = {"experiment": experiment, "run_dir": str(run_dir), "budget_pixels": budget, "first_pixels": k0,
           "steps": policy.steps, "samples": policy.samples, "path": "training code (FlowPolicy.propose)",
           "latency_batch1": p, "ms_per_pixel": round(p["p50_ms"] / budget, 4)}
    log(f"[{experiment}] batch-1 p50 {p['p50_ms']:.1f} ms for {budget} pixels")
    return out
