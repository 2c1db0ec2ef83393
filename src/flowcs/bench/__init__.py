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
import sys
from pathlib import Path

# Only light imports at module level: the CLI builds its parser (add_parser) on every call.

__all__ = ["add_parser", "run", "main"]


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


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..errors import ConfigError
    from ..io import write_json, write_text
    from ..runinfo import resolve_device
    from .markdown import bench_markdown
    from .mri import bench_image_run, bench_run
    from .timing import environment, load_average

    if args.runs < 1 or args.baseline_runs < 1 or args.warmup < 0 or args.threads < 1:
        raise ConfigError("--runs, --baseline-runs and --threads must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    command = ("flowcs " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"]
               else " ".join([sys.argv[0], *sys.argv[1:]]))
    payload: dict = {"command": command,
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
    lat = first["latency_batch1"]["exported"]
    payload.update({"policy": first["experiment"], "batch": 1, "device": str(device), "p50_ms": lat["p50_ms"],
                    "p90_ms": lat["p90_ms"], "p99_ms": lat["p99_ms"], "cpu_p50_ms": lat["cpu_p50_ms"],
                    "training_code_p50_ms": first["latency_batch1"]["training_code"]["p50_ms"],
                    "ads_over_flow_per_line": first["peers"].get("ads_over_flow_per_line")})
    if "serving_rss" in first and "exported" in first["serving_rss"]:
        payload["serving_peak_rss_mb"] = round(first["serving_rss"]["exported"]["peak_rss_mb"], 1)
    out = Path(args.out)
    write_json(out, payload)
    write_text(out.with_suffix(".md"), bench_markdown(payload))
    print(f"{first['experiment']} batch 1 on {device}: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms; "
          f"ADS/flow per line {payload['ads_over_flow_per_line']}; written {out} and {out.with_suffix('.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowcs")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
