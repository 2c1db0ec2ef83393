"""Mask-generation latency of the MRI flow policy, with ratios against baselines measured in the same run.

Usage:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latency.py [--run-dir runs/mri-8x] [any `flowcs bench` option]

A thin wrapper around ``flowcs bench`` (same code, :mod:`flowcs.bench`): it runs the benchmark, writes
``results/bench/latency.json`` + ``.md`` (or ``--out``) and prints the Markdown page, whose every figure sits
beside its baseline from the *same* run (the serving runtimes vs the training code, ADS and A-DPS vs the flow
policy per acquired line, fewer Euler steps vs the reference setting).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from flowcs.bench import main as bench_main  # noqa: E402


def _out_path(argv: list[str]) -> Path:
    for i, a in enumerate(argv):
        if a == "--out" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if a.startswith("--out="):
            return Path(a.split("=", 1)[1])
    return Path("results/bench/latency.json")


def main(argv: list[str]) -> int:
    if not any(a == "--run-dir" or a.startswith("--run-dir=") for a in argv):
        argv = ["--run-dir", "runs/mri-8x", *argv]
    code = bench_main(["bench", *argv])
    md = _out_path(argv).with_suffix(".md")
    if md.is_file():
        print(md.read_text())
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
