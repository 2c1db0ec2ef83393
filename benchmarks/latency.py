"""Mask-generation latency of the MRI flow policy, with ratios against baselines measured in the same run.

Usage:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latency.py [--run-dir runs/mri-8x] [any `flowcs bench` option]

A thin wrapper around ``flowcs bench`` (same code, :mod:`flowcs.bench`): it runs the benchmark, writes
``results/bench/latency.json`` + ``.md`` (or ``--out``), then prints every figure as a ratio to its baseline
from the *same* run — exported (TorchScript) vs the training code, ADS and A-DPS vs the flow policy per acquired
line, fewer Euler steps vs the run's own — so the numbers stay comparable on a machine shared with other jobs.
"""

from __future__ import annotations

import json
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
    if code:
        return code
    payload = json.loads(_out_path(argv).read_text())
    print(f"\nload average before {payload['load_before']}, after {payload['load_after']}; "
          f"{payload['environment']['torch_threads']} thread(s), {payload['environment']['cpu_model']}")
    for name, r in payload["runs"].items():
        le, lb = r["latency_batch1"]["exported"], r["latency_batch1"]["training_code"]
        print(f"[{name}] batch 1, exported: p50 {le['p50_ms']:.2f} ms, p99 {le['p99_ms']:.2f} ms "
              f"(cpu p50 {le['cpu_p50_ms']:.2f} ms)")
        print(f"[{name}] training code / exported: p50 {lb['p50_ms'] / le['p50_ms']:.2f}x, "
              f"p99 {lb['p99_ms'] / le['p99_ms']:.2f}x, cpu {lb['cpu_p50_ms'] / le['cpu_p50_ms']:.2f}x")
        steps = r["steps"]
        ref = max(steps, key=int)
        for s, row in steps.items():
            ratio = row["latency_batch1"]["p50_ms"] / steps[ref]["latency_batch1"]["p50_ms"]
            q = f", SSIM {row['ssim_mean']:.4f} vs {steps[ref]['ssim_mean']:.4f}" if "ssim_mean" in row else ""
            print(f"[{name}] {s} Euler steps / {ref}: latency {ratio:.2f}x{q}")
        pe = r["peers"]
        if "ads_over_flow_per_line" in pe:
            print(f"[{name}] ADS / flow per acquired line: {pe['ads_over_flow_per_line']}x "
                  f"(vs the training-code flow: {pe['ads_over_flow_training_code_per_line']}x; "
                  f"ADS {pe['ads']['weights']})")
        if "adps_over_flow_per_line" in pe:
            print(f"[{name}] A-DPS / flow per mask: {pe['adps_over_flow_per_line']}x ({pe['adps']['weights']})")
        rss = r.get("serving_rss", {})
        if "exported" in rss:
            print(f"[{name}] serving peak RSS: exported {rss['exported']['peak_rss_mb']:.0f} MB"
                  + (f", training code {rss['training_code']['peak_rss_mb']:.0f} MB" if "training_code" in rss else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
