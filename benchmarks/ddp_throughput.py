"""Training throughput (samples/s) with 1 vs 2 processes (one thread each), measured in the same run.

Usage:  .venv/bin/python benchmarks/ddp_throughput.py [--steps 40]
Trains the smoke-size classifier and flow stages from scratch in a temporary run directory, first on one
process, then under torchrun with two, and prints samples/s for each and the 2-vs-1 ratio. Needs the MNIST
data (../shared/data or --data).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(args: list[str], procs: int, env: dict) -> None:
    launcher = [sys.executable, "-m", "flowcs"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "flowcs"]
    proc = subprocess.run([*launcher, *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])


def samples_per_s(run_dir: Path, stage: str, batch: int) -> float:
    rows = [json.loads(line) for line in (run_dir / f"{stage}.log.jsonl").read_text().splitlines()]
    # rate over the logged window after the first record (excludes start-up)
    first, last = rows[0], rows[-1]
    return (last["step"] - first["step"]) * batch / (last["elapsed_s"] - first["elapsed_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="training steps per stage (default 40)")
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    data = ["--data", a.data] if a.data else []
    batch = 64
    common = ["--smoke", *data, "--set", f"classifier.loop.steps_per_epoch={a.steps}", "--set",
              "classifier.loop.epochs=1", "--set", f"classifier.loop.batch_size={batch}",
              "--set", "classifier.loop.log_every=5", "--set", f"flow.loop.steps_per_epoch={a.steps}",
              "--set", f"flow.loop.batch_size={batch}", "--set", "flow.loop.log_every=5"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        run(["train", "mnist-classify", *common, "--stage", "unet", "--stage", "classifier", "--run-dir", str(base)],
            1, env)
        for procs in (1, 2):
            rd = Path(tmp) / f"p{procs}"
            subprocess.run(["cp", "-r", str(base), str(rd)], check=True)
            for stage in ("classifier", "flow"):
                for f in rd.glob(f"{stage}*"):
                    f.unlink()
                run(["train", "mnist-classify", *common, "--stage", stage, "--run-dir", str(rd)], procs, env)
                results[(stage, procs)] = samples_per_s(rd, stage, batch)
    print(f"{'stage':<12}{'1 process':>14}{'2 processes':>14}{'ratio':>8}   (samples/s, global batch {batch})")
    for stage in ("classifier", "flow"):
        one, two = results[(stage, 1)], results[(stage, 2)]
        print(f"{stage:<12}{one:>14.1f}{two:>14.1f}{two / one:>8.2f}")


if __name__ == "__main__":
    main()
