"""``flowcs bench --run-dir runs/mri-8x``: mask-generation latency, throughput, memory and the speed–quality trade-off.

End to end from the low-frequency (LF) k-space of a test image to the hard mask: zero-filled reconstruction of the
LF band → its magnitude (the condition) → frozen CNN encoder → Euler steps of the velocity MLP → top-k. Measured
in one process, one after the other, so every ratio compares numbers taken under the same machine load:

* **exported**: the TorchScript mask generator that ``flowcs export`` writes (see :mod:`flowcs.export`), written
  to a temporary file and loaded back with :func:`flowcs.export.load_exported` — the serving path;
* **training code**: ``FlowPolicy.propose`` on the condition from ``KSpaceLineOperator.zero_filled`` under
  ``torch.inference_mode`` — the baseline;
* batch-1 latency p50/p90/p99 over ``--runs`` calls after warm-up (wall clock, plus the calling thread's CPU time,
  which the other jobs of a shared machine inflate much less), throughput at batch 1/16/64;
* Euler steps 5/10/20: latency and the SSIM/PSNR the masks reach with the run's frozen MoDL on the first
  ``--quality-images`` test images (the experiment's own reconstruction and metric functions), plus the share of
  masks identical to the 20-step ones;
* peers measured in the same run where their code exists: ADS (``flowcs.policies.ads``; the prior of ``flowcs
  compare`` when trained, otherwise the same architecture with untrained weights — timing only) and A-DPS
  (``flowcs.policies.adps``), as time per acquired line and ratios to the flow policy;
* peak RSS of a separate mask-serving process (``load_exported`` + masks, ``resource.getrusage``);
* optionally an image policy (``--image-run runs/mnist-classify``): the pixel flow policy's batch-1 latency.

Writes ``--out`` (JSON; top-level ``p50_ms``, ``p90_ms``, ``p99_ms``, ``ads_over_flow_per_line`` are those of the
first ``--run-dir``) and the same name with ``.md``. Records CPU model, threads, torch version and the load
average (``os.getloadavg``) before and after, because the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Only light imports at module level: the CLI builds its parser (add_parser) on every call.

__all__ = ["add_parser", "run", "bench_run", "environment", "percentiles", "time_calls", "serving_rss"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="mask-generation latency / throughput / memory benchmark of MRI runs")
    p.add_argument("--run-dir", action="append", required=True, metavar="DIR",
                   help="trained mri-8x / mri-4x run directory (repeatable; the first one gives the top-level keys)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--runs", type=int, default=200, help="timed batch-1 calls of the exported policy (default 200)")
    p.add_argument("--baseline-runs", type=int, default=50,
                   help="timed batch-1 calls of the training-code baseline (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing (default 10)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: best on a shared 2-core machine; see docs/performance.md)")
    p.add_argument("--batches", default="1,16,64", help="throughput batch sizes (default 1,16,64)")
    p.add_argument("--steps", default="5,10,20", help="Euler step counts of the speed-quality table (default 5,10,20)")
    p.add_argument("--quality-images", type=int, default=8,
                   help="test images for the speed-quality table (default 8; 0: skip the MoDL reconstructions)")
    p.add_argument("--peers", default="ads,adps", help="peers to time in the same run (default ads,adps; '' none)")
    p.add_argument("--ads-images", type=int, default=1, help="test images ADS is timed on (default 1)")
    p.add_argument("--image-run", default=None, metavar="DIR",
                   help="also time an image flow policy (e.g. runs/mnist-classify)")
    p.add_argument("--no-rss", action="store_true", help="skip the separate mask-serving process (peak RSS)")
    p.add_argument("--data", metavar="DIR", help="data root (default: $FLOWCS_DATA, else ../shared/data)")
    p.add_argument("--out", default="results/bench/latency.json", metavar="FILE",
                   help="JSON output (default results/bench/latency.json; the table goes to the .md beside it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise / flow draws (default 0)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny peer settings (flowcs compare's --smoke preset) for a quick check of the command")
    return p


# ----------------------------------------------------------------------------- measuring


def percentiles(ms: list[float]) -> dict:
    """p50 / p90 / p99 / mean / min / max of a list of milliseconds (nearest-rank on the sorted list)."""
    import math

    if not ms:
        return {}
    s = sorted(ms)

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]

    return {"p50_ms": round(q(50), 3), "p90_ms": round(q(90), 3), "p99_ms": round(q(99), 3),
            "mean_ms": round(sum(s) / len(s), 3), "min_ms": round(s[0], 3), "max_ms": round(s[-1], 3), "n": len(s)}


def time_calls(fn, runs: int, warmup: int = 0, sync=None) -> tuple[list[float], list[float]]:
    """Wall-clock and thread-CPU milliseconds of ``runs`` calls ``fn(i)`` after ``warmup`` untimed calls."""
    import time

    for i in range(warmup):
        fn(i)
    if sync:
        sync()
    wall, cpu = [], []
    for i in range(runs):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn(i)
        if sync:
            sync()
        wall.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.thread_time() - c0))
    return wall, cpu


def environment(device) -> dict:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {"cpu_model": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch_interop_threads": torch.get_num_interop_threads(),
           "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"), "torch_version": torch.__version__,
           "python": platform.python_version(), "device": str(device), "platform": platform.platform()}
    if getattr(device, "type", str(device)) == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


#: peak resident set of *this* process image: VmHWM (per address space, starts afresh at exec). getrusage's
#: ru_maxrss is reported too, but on Linux it keeps the parent's peak across fork + exec, so a process started
#: by a large one (this benchmark) reads the parent's figure; started from a shell both agree.
_VMHWM = r"""
def vmhwm_mb():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

SERVE_SCRIPT = _VMHWM + r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from flowcs.export import load_exported
pol = load_exported(sys.argv[1], device=sys.argv[4])
cfg = pol.config
h, w = cfg["image_size"]
gen = torch.Generator().manual_seed(0)
k = torch.randn(1, 2, h, w, generator=gen)
n = int(sys.argv[2])
t = []
for i in range(n):
    t0 = time.perf_counter()
    m = pol.masks(k, seed=i)
    t.append(1000 * (time.perf_counter() - t0))
assert int(m.sum()) == cfg["k"] + len(cfg["low_frequency_lines"])
print(json.dumps({"peak_rss_mb": vmhwm_mb(), "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "masks": n, "median_ms": sorted(t)[n // 2]}))
"""

SERVE_TRAINING_CODE = _VMHWM + r"""
import json, resource, sys
import torch
torch.set_num_threads(int(sys.argv[3]))
from flowcs.experiments.mri import Setup, trained_flow
from flowcs.experiments.mri_mask import _load_run
from pathlib import Path
ctx = _load_run(Path(sys.argv[1]), torch.device("cpu"))
setup = Setup.from_cfg(ctx.cfg)
pol = trained_flow(ctx)
k = torch.randn(1, 2, setup.size, setup.size, generator=torch.Generator().manual_seed(0))
acq = setup.acquired(1)
for i in range(int(sys.argv[2])):
    with torch.inference_mode():
        cond = setup.operator.zero_filled(k, acq).pow(2).sum(1, keepdim=True).sqrt()
        m = pol.propose(cond, setup.k, acq, torch.Generator().manual_seed(i))
print(json.dumps({"peak_rss_mb": vmhwm_mb(),
                  "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def serving_rss(exported: Path, masks: int = 200, threads: int = 1, device: str = "cpu",
                run_dir: Path | None = None) -> dict:
    """Peak RSS (MB) of a fresh process that loads ``exported`` and generates ``masks`` batch-1 masks; with
    ``run_dir`` also of a process serving the same masks through the training code."""
    import json
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = {}
    proc = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, str(exported), str(masks), str(threads), device],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    out["exported"] = json.loads(proc.stdout.strip().splitlines()[-1])
    if run_dir is not None:
        proc = subprocess.run([sys.executable, "-c", SERVE_TRAINING_CODE, str(run_dir), str(min(masks, 20)),
                               str(threads)], capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode == 0:
            out["training_code"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# ----------------------------------------------------------------------------- one MRI run


def _context(run_dir: Path, device: str, data: str | None):
    from .errors import ConfigError
    from .experiments import build_context
    from .training.checkpoint import load_checkpoint

    cfg_path, flow_path = run_dir / "config.yaml", run_dir / "flow.pt"
    if not cfg_path.is_file() or not flow_path.is_file():
        raise ConfigError(f"{run_dir}: not a trained MRI run (needs config.yaml and flow.pt)")
    experiment = load_checkpoint(flow_path, "flow").get("signature", {}).get("experiment")
    if experiment not in ("mri-4x", "mri-8x"):
        raise ConfigError(f"{flow_path}: belongs to experiment {experiment!r}; flowcs bench times MRI runs")
    return build_context(experiment, str(cfg_path), [], False, str(run_dir), str(run_dir / "results"), data, 0,
                         device)


def _seed(*parts: int):
    import torch

    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p)) % (2**61 - 1)
    return torch.Generator().manual_seed(h)


def bench_run(run_dir: str | Path, args, log=print) -> dict:
    """Every measurement of one MRI run directory (see the module doc)."""
    import tempfile
    import time

    import torch

    from . import export as E
    from .experiments import mri as M
    from .operators.fft import complex_abs

    run_dir = Path(run_dir)
    ctx = _context(run_dir, args.device, args.data)
    dev = ctx.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    c = ctx.cfg
    setup = M.Setup.from_cfg(c)
    op, k, size = setup.operator, setup.k, setup.size
    policy = M.trained_flow(ctx)
    policy.model.to(dev)
    split = c.eval.split
    images = M.load_splits(ctx, (split,))[split]
    n_img = len(images)
    n_in = max(1, min(n_img, max(args.quality_images, 8)))
    x = M.prepare(images, range(n_in), c)  # normalised complex test images (B, 2, S, S)
    acq1 = setup.acquired(1)
    # the LF k-space of each test image, with the experiment's k-space noise (evaluation protocol)
    y_lf = torch.cat([op.measure(x[i:i + 1], acq1, noisy=True, generator=_seed(args.seed, 1, i)) for i in range(n_in)])
    y_dev, acq_dev = y_lf.to(dev), acq1.to(dev)
    out: dict = {"experiment": ctx.experiment, "run_dir": str(run_dir), "image_size": [size, size], "columns": size,
                 "lines": {"total": setup.total, "low_frequency": setup.n_lf, "policy": k},
                 "flow": {"steps": policy.steps, "samples": policy.samples, "hidden": c.flow.hidden,
                          "layers": c.flow.layers, "encoder_widths": list(c.encoder.widths),
                          "encoder_bottleneck": c.encoder.bottleneck},
                 "inputs": f"LF k-space of the first {n_in} {split} images (noise {c.mri.noise_pct:g}%), cycled"}
    log(f"[{ctx.experiment}] {n_in} test k-spaces, {setup.n_lf} LF + {k} chosen of {size} lines; "
        f"load {_load()}")

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
                             "load_during": _load()}
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
    out["steps"] = _steps_table(ctx, setup, policy, x, args, dev, sync, log)

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


def _steps_table(ctx, setup, policy, x, args, dev, sync, log) -> dict:
    import torch

    from . import export as E
    from .experiments import mri as M

    steps_list = [int(s) for s in str(args.steps).split(",") if s.strip()]
    n_q = min(args.quality_images, x.shape[0])
    task = M.trained_modl(ctx) if n_q else None
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
                y = op.measure(xq, acq, noisy=True, generator=_seed(args.seed, 7, r))
                noise = E.noise_for(n_q, policy.samples, size, seed=args.seed * 1009 + r).to(dev)
                with torch.inference_mode():
                    mask = gen(y, noise)
                masks_at[s].append(mask.cpu())
                yf = op.measure(xq, mask, noisy=True, generator=_seed(args.seed, 8, r))
                pred = M.reconstruct(task, op, op.zero_filled(yf, mask), mask, ctx.cfg.eval.batch_size).cpu()
                tgt = M.complex_abs(xq.cpu())[:, 0]
                met = M._metrics(pred, tgt, tgt.flatten(1).amax(1).double())
                vals["ssim"] += met["ssim"].tolist()
                vals["psnr"] += met["psnr"].tolist()
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
    import time

    import torch

    from .experiments.compare import compare_config
    from .training.checkpoint import load_checkpoint

    wanted = [p.strip() for p in str(args.peers).split(",") if p.strip()]
    out: dict = {"flow_ms_per_line": round(flow_ms / setup.k, 4),
                 "flow_training_code_ms_per_line": round(flow_training_ms / setup.k, 4),
                 "note": "time per acquired line = time to choose the k policy lines of one image / k (batch 1)"}
    if not wanted:
        return out
    cc = compare_config(ctx.experiment, smoke=getattr(args, "smoke", False))
    op, k = setup.operator, setup.k
    x1 = x[:1].to(dev)
    acq = setup.acquired(1, dev)
    y_full = op.measure(x1, torch.ones_like(acq), noisy=True, generator=_seed(args.seed, 9))

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
        from .policies.ads import ADSPolicy, ImagePriorNet

        a = cc.ads
        std = float(x.std())
        torch.manual_seed(0)
        net = ImagePriorNet(2, a.widths, a.time_dim, 0.0, std)
        status = trained("compare-ads-prior", net, "model.")
        pol = ADSPolicy(net.to(dev).eval(), op, a.samples, a.steps, a.per_round, a.max_batch)
        times, cpus = [], []
        for i in range(max(1, args.ads_images)):
            xi = x[i % x.shape[0]:i % x.shape[0] + 1].to(dev)
            yi = op.measure(xi, torch.ones_like(acq), noisy=True, generator=_seed(args.seed, 10, i))

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
        from .policies.adps import ADPSNet, ADPSPolicy

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


# ----------------------------------------------------------------------------- image policy


def bench_image_run(run_dir: str | Path, args, log=print) -> dict:
    """Batch-1 latency of a pixel flow policy (mnist-classify): first random pixels → condition → flow → top-k."""
    import torch

    from .errors import ConfigError
    from .experiments import build_context
    from .masks import rate_to_budget
    from .training.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    flow_path = run_dir / "flow.pt"
    if not (run_dir / "config.yaml").is_file() or not flow_path.is_file():
        raise ConfigError(f"{run_dir}: not a trained run (needs config.yaml and flow.pt)")
    experiment = load_checkpoint(flow_path, "flow").get("signature", {}).get("experiment")
    if experiment != "mnist-classify":
        raise ConfigError(f"{flow_path}: --image-run supports mnist-classify runs, got {experiment!r}")
    from .experiments import mnist_classify as mc
    from .experiments.pixel import first_measurement

    ctx = build_context(experiment, str(run_dir / "config.yaml"), [], False, str(run_dir), str(run_dir / "results"),
                        args.data, 0, args.device)
    policy = mc.trained_flow(ctx)
    policy.model.to(ctx.device)
    x, _, _ = mc.load_data(ctx, "test")
    x = x[:64].to(ctx.device)
    op = mc.OPERATOR
    budget = rate_to_budget(max(ctx.cfg.eval.rates), op.n_locations)
    k0 = ctx.cfg.flow.first_samples

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


# ----------------------------------------------------------------------------- report


def _markdown(payload: dict) -> str:
    env = payload["environment"]
    lines = ["# Mask-generation benchmark", "",
             f"`{payload['command']}`", "",
             f"CPU: {env['cpu_model']} ({env['cpu_count']} logical CPUs), torch {env['torch_version']}, "
             f"{env['torch_threads']} intra-op thread(s), device {env['device']}. "
             f"Load average (1/5/15 min) before: {payload['load_before']}, after: {payload['load_after']} "
             "(a shared machine: other jobs compete for the cores, so wall-clock figures are upper bounds; "
             "`cpu p50` is the calling thread's CPU time).", ""]
    for name, r in payload["runs"].items():
        le, lb = r["latency_batch1"]["exported"], r["latency_batch1"]["training_code"]
        lines += [f"## {name} ({r['image_size'][0]}×{r['image_size'][1]}, {r['lines']['low_frequency']} LF + "
                  f"{r['lines']['policy']} chosen of {r['columns']} lines; {r['flow']['steps']} Euler steps × "
                  f"{r['flow']['samples']} samples)", "",
                  "| batch-1 latency | p50 ms | p90 ms | p99 ms | cpu p50 ms | n |", "|---|---|---|---|---|---|"]
        for label, p in (("exported (TorchScript)", le), ("training code (FlowPolicy)", lb)):
            lines.append(f"| {label} | {p['p50_ms']:.2f} | {p['p90_ms']:.2f} | {p['p99_ms']:.2f} | "
                         f"{p['cpu_p50_ms']:.2f} | {p['n']} |")
        lines += ["", f"Speed-up at p50: {r['latency_batch1']['speedup_p50']}×; exported masks equal to the "
                      f"training code's: {r['exported_masks_equal_training_code']}. "
                  "Components (exported, wall / cpu p50 ms): "
                  + ", ".join(f"{k} {v:.2f} / {r['components_cpu_p50_ms'][k]:.2f}"
                              for k, v in r["components_p50_ms"].items()) + ".", "",
                  "| batch | masks/s | ms per call |", "|---|---|---|"]
        for b, t in r["throughput_exported"].items():
            lines.append(f"| {b} | {t['masks_per_s']} | {t['ms_per_call']} |")
        lines += ["", "| Euler steps | p50 ms | p99 ms | cpu p50 ms | SSIM | PSNR | masks = most-steps masks |",
                  "|---|---|---|---|---|---|---|"]
        for s, row in r["steps"].items():
            eq = next((v for kk, v in row.items() if kk.startswith("masks_equal")), "")
            lat = row["latency_batch1"]
            lines.append(f"| {s} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} | {lat.get('cpu_p50_ms', '')} | "
                         f"{row.get('ssim_mean', '')} | {row.get('psnr_mean', '')} | {eq} |")
        pe = r["peers"]
        lines += ["", "| policy | ms per mask | ms per acquired line | ratio to flow (per line) | weights |",
                  "|---|---|---|---|---|",
                  f"| flow (exported) | {le['p50_ms']:.2f} | {pe['flow_ms_per_line']} | 1 | trained |",
                  f"| flow (training code) | {lb['p50_ms']:.2f} | {pe['flow_training_code_ms_per_line']} | "
                  f"{round(lb['p50_ms'] / le['p50_ms'], 2)} | trained |"]
        if "ads" in pe:
            lines.append(f"| ADS | {pe['ads']['ms_per_mask']} | {pe['ads']['ms_per_line']} | "
                         f"{pe['ads_over_flow_per_line']} | {pe['ads']['weights']} |")
        if "adps" in pe:
            lines.append(f"| A-DPS | {pe['adps']['latency_batch1']['p50_ms']} | {pe['adps']['ms_per_line']} | "
                         f"{pe['adps_over_flow_per_line']} | {pe['adps']['weights']} |")
        if "serving_rss" in r:
            rss = r["serving_rss"]
            lines += ["", "Peak RSS of a mask-serving process: "
                      + ", ".join(f"{k} {v.get('peak_rss_mb', 0):.0f} MB" for k, v in rss.items()
                                  if isinstance(v, dict)) + (f" ({rss['error']})" if "error" in rss else "") + "."]
        lines.append("")
    if "image_policy" in payload:
        ip = payload["image_policy"]
        p = ip["latency_batch1"]
        lines += [f"## {ip['experiment']} flow policy ({ip['path']})", "",
                  f"{ip['first_pixels']} random pixels + {ip['budget_pixels']} chosen, {ip['steps']} Euler steps: "
                  f"batch-1 p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms (cpu p50 {p['cpu_p50_ms']:.2f} ms).", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from .errors import ConfigError
    from .io import write_json, write_text
    from .runinfo import resolve_device

    if args.runs < 1 or args.baseline_runs < 1 or args.warmup < 0 or args.threads < 1:
        raise ConfigError("--runs, --baseline-runs and --threads must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    command = ("flowcs " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"]
               else " ".join([sys.argv[0], *sys.argv[1:]]))
    payload: dict = {"command": command,
                     "environment": environment(device), "load_before": _load(), "runs": {}}
    t0 = time.time()
    for rd in args.run_dir:
        r = bench_run(rd, args)
        payload["runs"][r["experiment"]] = r
    if args.image_run:
        payload["image_policy"] = bench_image_run(args.image_run, args)
    payload["load_after"] = _load()
    payload["wall_s"] = round(time.time() - t0, 1)
    first = payload["runs"][next(iter(payload["runs"]))]
    lat = first["latency_batch1"]["exported"]
    payload.update({"policy": first["experiment"], "batch": 1, "device": str(device), "p50_ms": lat["p50_ms"],
                    "p90_ms": lat["p90_ms"], "p99_ms": lat["p99_ms"], "cpu_p50_ms": lat["cpu_p50_ms"],
                    "training_code_p50_ms": first["latency_batch1"]["training_code"]["p50_ms"],
                    "ads_over_flow_per_line": first["peers"].get("ads_over_flow_per_line")})
    if "serving_rss" in first and "exported" in first["serving_rss"]:
        payload["serving_peak_rss_mb"] = round(first["serving_rss"]["exported"]["peak_rss_mb"], 1)
    out = Path(args.out)
    write_json(out, payload)
    write_text(out.with_suffix(".md"), _markdown(payload))
    print(f"{first['experiment']} batch 1 on {device}: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms; "
          f"ADS/flow per line {payload['ads_over_flow_per_line']}; written {out} and {out.with_suffix('.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowcs")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
