"""``flowcs export --run-dir runs/mri-8x --out policy.pt2``: a self-contained, fast MRI mask generator.

The exported file holds the whole mask generation of a trained one-shot MRI flow policy, from the low-frequency
k-space to the hard mask (:mod:`.generator`), as a ``torch.export`` program (``.pt2``, run by PyTorch) or as an
ONNX model (``.onnx``, run by ONNX Runtime); :func:`load_exported` loads either (:mod:`.formats`). A JSON sidecar
(``<out>.json``) records the configuration: image size, N, the LF band, k, Euler steps, samples, the run it came
from, and the commit that exported it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .formats import FORMAT, FORMATS, ExportedPolicy, load_exported, noise_for, save_program, sidecar
from .generator import MaskGenerator, build_generator

__all__ = ["FORMAT", "FORMATS", "MaskGenerator", "ExportedPolicy", "build_generator", "export_policy", "export_run",
           "load_exported", "noise_for", "check_against_run", "add_parser", "run"]


def export_policy(policy, lf: torch.Tensor, k: int, size: int, out: str | Path, config: dict, pool: int = 1,
                  steps: int | None = None, samples: int | None = None) -> dict:
    """Write ``out`` (``.pt2`` or ``.onnx``) + ``out.json``; returns the configuration written."""
    from ..io import write_json
    from ..runinfo import git_commit

    out = Path(out)
    gen = build_generator(policy, lf, k, size, pool, steps, samples)
    cfg = {"format": FORMAT, **config, "image_size": [size, size], "columns": gen.n, "k": gen.k, "steps": gen.steps,
           "samples": gen.samples, "pool": gen.pool, "low_frequency_lines": lf.nonzero().flatten().tolist(),
           "runtime": "onnxruntime" if out.suffix == ".onnx" else "torch", "torch_version": torch.__version__,
           "exported_by_commit": git_commit(),
           "inputs": {"kspace": "float32 (B, 2, H, W): real/imaginary parts of the centred k-space (fastMRI "
                                "convention, orthonormal FFT of the normalised image); only the LF columns are read",
                      "noise": "float32 (B, samples, N): x0 ~ N(0, I); torch.randn((B, samples, N), "
                               "generator=torch.Generator().manual_seed(seed)) reproduces the training code"},
           "outputs": {"mask": "bool (B, N): LF band + k columns chosen by the flow policy",
                       "scores": "float32 (B, N): the scores the k columns were chosen from"}}
    save_program(gen, out, cfg)
    write_json(sidecar(out), cfg)
    return cfg


def _load_mri_run(run_dir):
    """(context, experiment) of a trained mri-4x / mri-8x run directory."""
    from ..experiments import get_experiment
    from ..experiments.context import load_run

    ctx = load_run(run_dir, "cpu", experiments=("mri-4x", "mri-8x"))
    return ctx, get_experiment(ctx.experiment)


def export_run(run_dir: str | Path, out: str | Path, steps: int | None = None, samples: int | None = None) -> dict:
    """Load a trained mri-4x / mri-8x run directory (with its own config.yaml) and export its flow policy."""
    ctx, exp = _load_mri_run(run_dir)
    geometry = exp.geometry(ctx.cfg)
    policy = exp.flow_policy(ctx)
    m = ctx.cfg.mri
    config = {"experiment": ctx.experiment, "run_dir": str(run_dir), "acceleration": m.acceleration,
              "lf_fraction": m.lf_fraction, "total_lines": geometry.total,
              "normalisation": "complex image divided by its LF-band scale (flowcs.data.mri_files.lf_scale)"}
    return export_policy(policy, geometry.lf, geometry.k, geometry.size, out, config, geometry.pool, steps, samples)


def check_against_run(path: str | Path, run_dir: str | Path, seeds: int = 4) -> dict:
    """Exported masks and scores vs ``FlowPolicy`` on random normalised images of the run's size (same noise)."""
    exported = load_exported(path)
    ctx, experiment = _load_mri_run(run_dir)
    geometry = experiment.geometry(ctx.cfg)
    policy = experiment.flow_policy(ctx)
    policy.steps, policy.samples = exported.config["steps"], exported.config["samples"]
    op, cond_fn = geometry.operator, geometry.condition_fn()
    equal, total, worst = 0, 0, 0.0
    for s in range(seeds):
        x = torch.randn(2, 2, geometry.size, geometry.size, generator=torch.Generator().manual_seed(1000 + s))
        acq = geometry.acquired(2)
        y = op.measure(x, acq)
        cond = cond_fn(op, op.zero_filled(y, acq), acq)
        ref = policy.propose(cond, geometry.k, acq, torch.Generator().manual_seed(s))
        ref_scores = policy.scores(cond, acq, torch.Generator().manual_seed(s))
        noise = exported.noise(2, seed=s)
        got = exported.masks(y, noise=noise)
        worst = max(worst, float((exported.scores(y, noise) - ref_scores).abs().max()))
        equal += int((got == ref).all(dim=1).sum())
        total += 2
    return {"equal": equal, "total": total, "max_abs_score_diff": worst}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="write a self-contained mask generator of a trained MRI run "
                                             "(torch.export .pt2 or ONNX .onnx)")
    p.add_argument("--run-dir", required=True, metavar="DIR", help="a trained mri-4x / mri-8x run directory")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output file: .pt2 (torch.export program) or .onnx (ONNX Runtime); the config goes to "
                        "FILE.json")
    p.add_argument("--steps", type=int, default=None, help="Euler steps (default: the run's flow.steps)")
    p.add_argument("--samples", type=int, default=None, help="flow samples averaged per mask (default: the run's)")
    p.add_argument("--check", type=int, default=4, metavar="SEEDS",
                   help="compare the exported masks with the training code's on 2×SEEDS random k-spaces (default "
                        "4: 8 masks; 0: skip)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    for name in ("steps", "samples"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ConfigError(f"--{name} must be >= 1, got {v}")
    if Path(args.out).suffix not in FORMATS:
        raise ConfigError(f"{args.out}: --out must end in {' or '.join(FORMATS)}")
    cfg = export_run(args.run_dir, args.out, args.steps, args.samples)
    msg = (f"exported {cfg['experiment']} flow policy ({cfg['steps']} Euler steps, {cfg['samples']} samples, "
           f"{len(cfg['low_frequency_lines'])} LF + {cfg['k']} chosen of {cfg['columns']} lines, {cfg['runtime']}) → "
           f"{args.out} (+ {sidecar(args.out).name})")
    if args.check:
        diff = check_against_run(args.out, args.run_dir, args.check)
        msg += (f"; masks equal to the training code's on {diff['equal']}/{diff['total']} checks "
                f"(max |Δscore| {diff['max_abs_score_diff']:.2e})")
        if diff["equal"] != diff["total"]:
            print(msg)
            return 1
    print(msg)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m flowcs.export …``."""
    from ..cli_common import standalone_main

    return standalone_main(add_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
