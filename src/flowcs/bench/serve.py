"""Peak memory of a process that serves masks: ``python -m flowcs.bench.serve``.

The benchmark starts this module in a fresh process so that the figure is that of a server, not of the
benchmark: ``exported PATH N THREADS DEVICE`` loads an exported policy with :func:`flowcs.export.load_exported`
and generates N batch-1 masks; ``training-code RUN_DIR N THREADS`` serves the same masks through the training
code (the run's flow policy). Prints one JSON line: ``peak_rss_mb`` (``VmHWM``: the peak of this process image,
which starts afresh at exec) and ``ru_maxrss_mb`` (``getrusage``; on Linux it keeps the parent's peak across
fork + exec, so it can read the parent's figure when started by a large process).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["serving_rss", "vmhwm_mb"]


def vmhwm_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _serve_exported(path: str, n: int, device: str) -> dict:
    import torch

    from ..export import load_exported

    pol = load_exported(path, device=device)
    h, w = pol.config["image_size"]
    k = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(0))
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        m = pol.masks(k, seed=i)
        times.append(1000 * (time.perf_counter() - t0))
    if int(m.sum()) != pol.config["k"] + len(pol.config["low_frequency_lines"]):
        raise SystemExit("exported policy returned a mask of the wrong size")
    return {"masks": n, "median_ms": sorted(times)[n // 2]}


def _serve_training_code(run_dir: str, n: int) -> dict:
    import torch

    from ..experiments import get_experiment
    from ..experiments.context import load_run

    ctx = load_run(run_dir, "cpu")
    exp = get_experiment(ctx.experiment)
    geometry = exp.geometry(ctx.cfg)
    policy = exp.flow_policy(ctx)
    k = torch.randn(1, 2, geometry.size, geometry.size, generator=torch.Generator().manual_seed(0))
    acq = geometry.acquired(1)
    for i in range(n):
        with torch.inference_mode():
            cond = geometry.condition_fn()(geometry.operator, geometry.operator.zero_filled(k, acq), acq)
            policy.propose(cond, geometry.k, acq, torch.Generator().manual_seed(i))
    return {"masks": n}


def main(argv: list[str]) -> int:
    import torch

    kind, target, n, threads = argv[0], argv[1], int(argv[2]), int(argv[3])
    torch.set_num_threads(threads)
    out = _serve_exported(target, n, argv[4]) if kind == "exported" else _serve_training_code(target, n)
    out.update(peak_rss_mb=vmhwm_mb(), ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out))
    return 0


def serving_rss(exported: Path, masks: int = 200, threads: int = 1, device: str = "cpu",
                run_dir: Path | None = None) -> dict:
    """Peak RSS (MB) of a fresh process that loads ``exported`` and generates ``masks`` batch-1 masks; with
    ``run_dir`` also of a process serving the same masks through the training code."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "flowcs.bench.serve"]
    proc = subprocess.run([*cmd, "exported", str(exported), str(masks), str(threads), device],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    out = {"exported": json.loads(proc.stdout.strip().splitlines()[-1])}
    if run_dir is not None:
        proc = subprocess.run([*cmd, "training-code", str(run_dir), str(min(masks, 20)), str(threads)],
                              capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode == 0:
            out["training_code"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
