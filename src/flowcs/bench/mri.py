"""Latency, throughput, speed–quality and peers of one trained MRI run (see :mod:`flowcs.bench`)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import export as E
from ..experiments import get_experiment
from ..experiments.context import load_run
from ..rng import derive
from .quality import quality_table
from .serve import serving_rss
from .serving import components, latency_table, serving_forms, throughput_table
from .timing import load_average, percentiles, time_calls

__all__ = ["bench_run", "bench_image_run"]


def mix_seed(*parts: int) -> torch.Generator:
    """A generator seeded from the benchmark's seed and the purpose of the draw."""
    return torch.Generator().manual_seed(derive("bench", *parts))


def bench_run(run_dir: str | Path, args, log=print) -> dict:
    """Every measurement of one MRI run directory (see :mod:`flowcs.bench`)."""
    run_dir = Path(run_dir)
    ctx = load_run(run_dir, args.device, args.data, experiments=("mri-4x", "mri-8x"))
    dev = ctx.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    c = ctx.cfg
    exp = get_experiment(ctx.experiment)
    setup = exp.setup(ctx, split="val")  # quality is judged on validation images, like every choice
    geometry = setup.extras["geometry"]
    op, k, size = geometry.operator, geometry.k, geometry.size
    policy = exp.flow_policy(ctx)
    policy.model.to(dev)
    n_in = max(1, min(len(setup.test), 8))
    x = setup.test.x[:n_in]
    acq1 = geometry.acquired(1)
    # the LF k-space of each validation image, with the experiment's k-space noise (evaluation protocol)
    y_lf = torch.cat([op.measure(x[i:i + 1], acq1, noisy=True, generator=mix_seed(args.seed, 1, i))
                      for i in range(n_in)]).to(dev)
    cond_fn, acq_dev = geometry.condition_fn(), acq1.to(dev)
    out: dict = {"experiment": ctx.experiment, "run_dir": str(run_dir), "image_size": [size, size], "columns": size,
                 "lines": {"total": geometry.total, "low_frequency": geometry.n_lf, "policy": k},
                 "flow": {"steps": policy.steps, "samples": policy.samples, "rounds": policy.rounds,
                          "hidden": c.flow.hidden, "layers": c.flow.layers, "encoder_pool": geometry.pool,
                          "encoder_widths": list(c.encoder.widths), "encoder_bottleneck": c.encoder.bottleneck},
                 "inputs": f"LF k-space of the first {n_in} validation images (noise {c.mri.noise_pct:g}%), cycled"}
    log(f"[{ctx.experiment}] {n_in} k-spaces, {geometry.n_lf} LF + {k} chosen of {size} lines; load {load_average()}")
    t0 = time.perf_counter()
    forms, tmp = serving_forms(policy, geometry, {"experiment": ctx.experiment, "run_dir": str(run_dir)}, dev)
    out["export_s"] = round(time.perf_counter() - t0, 2)
    out["file_mb"] = {f.suffix[1:]: round(f.stat().st_size / 2**20, 2) for f in tmp.iterdir() if f.suffix in E.FORMATS}
    noises = [E.noise_for(1, policy.samples, size, seed=args.seed * 100_003 + i).to(dev) for i in range(64)]

    def training_code(i):
        j = i % n_in
        with torch.inference_mode():
            cond = cond_fn(op, op.zero_filled(y_lf[j:j + 1], acq_dev), acq_dev)
            return policy.propose(cond, k, acq_dev, torch.Generator().manual_seed(args.seed * 100_003 + i % 64))

    # same masks as the training code? (same noise: FlowPolicy draws x0 from the seeded generator like noise_for)
    agreement = {}
    for name, fn in forms.items():
        same = 0
        for i in range(16):
            mask, _ = fn(y_lf[i % n_in:i % n_in + 1], noises[i])
            same += int(bool((mask.cpu() == training_code(i).cpu()).all()))
        agreement[name] = f"{same}/16"
    out["masks_equal_training_code"] = agreement
    calls = {name: (lambda i, f=fn: f(y_lf[i % n_in:i % n_in + 1], noises[i % 64])) for name, fn in forms.items()}
    calls["training_code"] = training_code
    log(f"[{ctx.experiment}] batch-1 latency: {args.runs} calls per runtime, {args.baseline_runs} training code")
    out["latency_batch1"] = latency_table(calls, args.runs, args.baseline_runs, args.warmup, sync)
    for name in forms:
        p = out["latency_batch1"][name]
        log(f"[{ctx.experiment}]   {name}: p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms")
    batches = [int(b) for b in str(args.batches).split(",") if b.strip()]
    out["throughput"] = throughput_table(forms, y_lf, policy.samples, batches, sync)
    out["components"] = components(policy, geometry, y_lf[:1], noises[0], max(5, min(30, args.runs // 4)), sync)
    if args.quality_images:
        setup.test = setup.test.head(args.quality_images)
        steps = [int(s) for s in str(args.steps).split(",") if s.strip()]
        samples = [int(s) for s in str(args.samples).split(",") if s.strip()]
        out["quality"] = quality_table(exp, ctx, setup, policy, steps, samples, args.quality_seeds,
                                       c.eval.batch_size)
    best = min(forms, key=lambda n: out["latency_batch1"][n]["p50_ms"])
    out["serving_runtime"] = {"fastest_batch1": best, "note": "shipped formats: pt2 (torch.export) and onnx "
                              "(ONNX Runtime); torchscript and eager are measured for comparison only"}
    flow_ms = out["latency_batch1"]["pt2"]["p50_ms"]
    out["peers"] = _peers(ctx, geometry, x, args, dev, flow_ms, out["latency_batch1"]["training_code"]["p50_ms"], log)
    if not args.no_rss:
        out["serving_rss"] = serving_rss(tmp / "policy.pt2", min(200, max(20, args.runs)), args.threads, str(dev),
                                         run_dir)
        log(f"[{ctx.experiment}] serving peak RSS: {out['serving_rss']}")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return out


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
