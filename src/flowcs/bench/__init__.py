"""``flowcs bench --run-dir runs/mri-8x``: mask-generation latency, throughput, memory and the speed–quality trade-off.

End to end from the low-frequency (LF) k-space of a validation image to the hard mask: the zero-filled LF image
(two real DFT products), its pooled magnitude (the condition), the frozen CNN encoder, the Euler steps of the
velocity MLP, top-k. Measured in one process with batch-1 calls interleaved in blocks, so every ratio compares
numbers taken under the same machine load (:mod:`.serving`):

* the serving forms ``flowcs export`` writes, each written to a file and loaded back with
  :func:`flowcs.export.load_exported` as a server would: ``pt2`` (``torch.export``, the top-level figures) and
  ``onnx`` (ONNX Runtime); for comparison the same generator traced by TorchScript and run eagerly, and the
  training code (``FlowPolicy.propose``) as the baseline;
* batch-1 latency p50/p90/p99 (wall clock, plus the calling thread's CPU time), throughput at batch 1/16/64,
  and a component profile (condition, encoder, Euler steps, top-k);
* the speed–quality table on validation images (:mod:`.quality`): SSIM, paired difference to the reference
  setting, mask agreement and adaptivity for each (Euler steps, samples);
* ADS and A-DPS timed per acquired line in the same process;
* peak RSS of a separate mask-serving process (:mod:`.serve`);
* optionally an image policy (``--image-run runs/mnist-classify``): the pixel flow policy's batch-1 latency.

Writes ``--out`` (schema ``flowcs-bench/2``; top-level ``p50_ms``, ``p99_ms``, ``masks_per_s_batch64``,
``ads_over_flow_per_line`` are those of the first ``--run-dir``'s faster shipped form, ``runtime``) and the same
name with ``.md``; records the commit, CPU model, threads, torch version and the load averages before, during and after.
The machine must be quiet: a 1- or 5-minute load average of 1 or more before the first timing, or a 1-minute one of
1 + ``--threads`` or more during and after it (the benchmark's own busy threads drive it towards ``--threads``),
marks the file ``"valid": false`` and the command exits 3: a timing from a busy machine is not a figure.
``--wait-quiet S`` first waits up to S seconds for the machine to become quiet; the 15-minute average lags far
behind and is only recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Only light imports at module level: the CLI builds its parser (add_parser) on every call.

__all__ = ["add_parser", "run", "main", "quiet_machine", "SCHEMA", "MAX_LOAD"]

#: the layout of latency.json (docs/performance.md describes every key)
SCHEMA = "flowcs-bench/2"
#: load (runnable processes besides the benchmark's own threads) at which a benchmark is marked invalid (exit 3)
MAX_LOAD = 1.0


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
    p.add_argument("--steps", default="1,2,4,20",
                   help="Euler step counts of the speed-quality table (default 1,2,4,20; the largest is the reference)")
    p.add_argument("--samples", default="1,4",
                   help="flow samples of the speed-quality table (default 1,4; the largest is the reference)")
    p.add_argument("--quality-images", type=int, default=8,
                   help="validation images of the speed-quality table (default 8; 0: skip it)")
    p.add_argument("--quality-seeds", type=int, default=4,
                   help="draws (k-space noise, flow noise) per image in the speed-quality table (default 4)")
    p.add_argument("--peers", default="ads,adps", help="peers to time in the same run (default ads,adps; '' none)")
    p.add_argument("--ads-images", type=int, default=1, help="test images ADS is timed on (default 1)")
    p.add_argument("--image-run", default=None, metavar="DIR",
                   help="also time an image flow policy (e.g. runs/mnist-classify)")
    p.add_argument("--no-rss", action="store_true", help="skip the separate mask-serving process (peak RSS)")
    p.add_argument("--data", metavar="DIR", help="data root (default: $FLOWCS_DATA, else ../shared/data)")
    p.add_argument("--out", default="results/bench/latency.json", metavar="FILE",
                   help="JSON output (default results/bench/latency.json; the table goes to the .md beside it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise / flow draws (default 0)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help=f"first wait up to S seconds for the 1- and 5-minute load averages to fall below {MAX_LOAD} "
                        "(default 0: start at once)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny peer settings (flowcs compare's --smoke preset) for a quick check of the command")
    return p


def quiet_before(load: list[float], limit: float = MAX_LOAD) -> bool:
    """The 1- and 5-minute load averages are below ``limit`` (nothing else busy before a benchmark starts)."""
    return max(load[:2]) < limit


def quiet_machine(before: list[float], during: list[list[float]], threads: int = 1, limit: float = MAX_LOAD) -> bool:
    """True when the machine was quiet before the benchmark (:func:`quiet_before`) and the 1-minute load below
    ``limit + threads`` in every later sample (the benchmark's own busy threads add about ``threads``)."""
    return quiet_before(before, limit) and all(triple[0] < limit + threads for triple in during)


def wait_for_quiet(seconds: float, limit: float = MAX_LOAD, poll: float = 5.0) -> list[float]:
    """Wait up to ``seconds`` for the 1- and 5-minute load averages to fall below ``limit``; the last reading."""
    import time

    from .timing import load_average

    deadline = time.time() + seconds
    load = load_average()
    while not quiet_before(load, limit) and time.time() < deadline:
        time.sleep(poll)
        load = load_average()
    return load


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..errors import ConfigError
    from ..io import write_json, write_text
    from ..runinfo import git_commit, resolve_device
    from .markdown import bench_markdown
    from .mri import bench_image_run, bench_run
    from .timing import environment, load_average

    if args.runs < 1 or args.baseline_runs < 1 or args.warmup < 0 or args.threads < 1 or args.quality_seeds < 1:
        raise ConfigError("--runs, --baseline-runs, --threads and --quality-seeds must be >= 1 and --warmup >= 0")
    if args.wait_quiet > 0:
        wait_for_quiet(args.wait_quiet)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    command = ("flowcs " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"]
               else " ".join([sys.argv[0], *sys.argv[1:]]))
    payload: dict = {"schema": SCHEMA, "command": command, "git_commit": git_commit(),
                     "environment": environment(device), "load_before": load_average(), "runs": {}}
    t0 = time.time()
    for rd in args.run_dir:
        r = bench_run(rd, args)
        payload["runs"][r["experiment"]] = r
    if args.image_run:
        payload["image_policy"] = bench_image_run(args.image_run, args)
    payload["load_after"] = load_average()
    payload["wall_s"] = round(time.time() - t0, 1)
    first = payload["runs"][next(iter(payload["runs"]))]
    runtime = min(("pt2", "onnx"), key=lambda r: first["latency_batch1"][r]["p50_ms"])  # the faster shipped form
    lat = first["latency_batch1"][runtime]
    during = [*(r["latency_batch1"]["load_during"] for r in payload["runs"].values()), payload["load_after"]]
    valid = quiet_machine(payload["load_before"], during, args.threads)
    payload.update({
        "valid": valid, "max_load_average": MAX_LOAD,
        "load_rule": f"1- and 5-minute load averages < {MAX_LOAD} before, 1-minute < {MAX_LOAD} + threads during "
                     "and after", "policy": first["experiment"], "runtime": runtime, "batch": 1,
        "device": str(device), "threads": args.threads, "p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"],
        "p99_ms": lat["p99_ms"], "cpu_p50_ms": lat["cpu_p50_ms"],
        "masks_per_s_batch64": first["throughput"][runtime].get("64", {}).get("masks_per_s"),
        "training_code_p50_ms": first["latency_batch1"]["training_code"]["p50_ms"],
        "ads_over_flow_per_line": first["peers"].get("ads_over_flow_per_line")})
    if "serving_rss" in first and "exported" in first["serving_rss"]:
        payload["serving_peak_rss_mb"] = round(first["serving_rss"]["exported"]["peak_rss_mb"], 1)
    out = Path(args.out)
    write_json(out, payload)
    write_text(out.with_suffix(".md"), bench_markdown(payload))
    print(f"{first['experiment']} batch 1 on {device} ({runtime}): p50 {lat['p50_ms']:.2f} ms, "
          f"p99 {lat['p99_ms']:.2f} ms; "
          f"{payload['masks_per_s_batch64'] or 'n/a'} masks/s at batch 64; ADS/flow per line "
          f"{payload['ads_over_flow_per_line']}; written {out} and {out.with_suffix('.md')}")
    if not valid:
        print(f"flowcs: error: the machine was busy (1-minute load {payload['load_before'][0]} before, "
              f"{[t[0] for t in during]} during; rule: {payload['load_rule']}), so the timings are not a figure "
              f"(\"valid\": false in {out}); run it alone", file=sys.stderr)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m flowcs.bench …``."""
    from ..cli_common import standalone_main

    return standalone_main(add_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
