"""``flowcs mri mask FILE.h5 --acceleration 8 --run-dir runs/mri-8x --out lines.json``.

Given a fastMRI single-coil volume and a trained MRI run, output the k-space lines a policy chooses for every
selected slice — what an MRI engineer would call. Per slice: take the image (centred inverse FFT), centre-crop
it to the run's size, acquire the central low-frequency band, reconstruct its zero-filled magnitude, and let
the policy (default: the trained flow) pick the remaining ``round(size / acceleration) − |LF band|`` columns.

Output (written atomically, only after every slice succeeded):

* ``.json``: run/file metadata, the LF lines, and per slice the chosen columns (``lines``, indices in the
  run's size-column grid, LF band included) and ``lines_native`` — the nearest column of the file's own
  k-space grid at the same spatial frequency (the crop shrinks the field of view by ``size / cols``, so
  model column j ↔ native column ``cols // 2 + (j − size // 2) · cols / size``);
* ``.npy``: a bool array (slices, size) of the full masks (LF band included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Only light imports at module level: the CLI builds its parser (add_parser) on every call.
SLICE_HALF_WIDTH = 10  # = flowcs.data.fastmri.SLICE_HALF_WIDTH (checked in tests)
POLICIES = ("flow", "random", "equispaced", "variable-density", "low-frequency")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``mri`` (with the ``mask`` action) to an argparse sub-parser collection; returns the ``mri`` parser."""
    p = subparsers.add_parser("mri", help="MRI tools (choose k-space lines for a fastMRI .h5 volume)")
    sub = p.add_subparsers(dest="mri_command", required=True, metavar="ACTION")
    m = sub.add_parser("mask", help="output the k-space lines a trained policy chooses, per slice")
    m.add_argument("file", help="fastMRI single-coil .h5 volume (kspace: slices x rows x cols, complex)")
    m.add_argument("--acceleration", type=float, default=None,
                   help="acceleration factor; total lines = round(size / acceleration) including the LF band "
                        "(default: the run's)")
    m.add_argument("--run-dir", required=True, metavar="DIR", help="a trained mri-4x / mri-8x run directory")
    m.add_argument("--out", required=True, metavar="FILE", help="output .json (lines per slice) or .npy (masks)")
    m.add_argument("--policy", default="flow", choices=POLICIES, help="policy choosing the lines (default flow)")
    m.add_argument("--slices", default="center", choices=["center", "all"],
                   help=f"center: centre ±{SLICE_HALF_WIDTH} slices (default); all: every slice")
    m.add_argument("--seed", type=int, default=0, help="seed of the flow noise / random baselines (default 0)")
    m.add_argument("--device", default="cpu", help="auto | cpu | cuda (default cpu)")
    return p


def choose_lines(file: str | Path, run_dir: str | Path, acceleration: float | None = None, policy: str = "flow",
                 all_slices: bool = False, seed: int = 0, device: str = "cpu") -> dict:
    """Compute the lines (no file written). Returns the JSON payload plus ``masks`` (bool (slices, size))."""
    import time

    import torch

    from ..data.fastmri import read_volume_images
    from ..errors import ConfigError
    from ..operators.kspace import KSpaceLineOperator, low_frequency_band
    from ..policies import RandomPolicy
    from ..policies.cartesian import EquispacedPolicy, LowFrequencyPolicy, VariableDensityPolicy
    from . import get_experiment
    from .context import load_run
    from .mri import Geometry, lf_condition, line_budget, normalise

    file = Path(file)
    ctx = load_run(run_dir, device, experiments=("mri-4x", "mri-8x"))
    m = ctx.cfg.mri
    acc = m.acceleration if acceleration is None else acceleration
    total, n_lf, k = line_budget(m.size, acc, m.lf_fraction, where=f"{file}: ")
    images, slice_idx = read_volume_images(file, m.size, None if all_slices else SLICE_HALF_WIDTH)
    native_cols = _native_cols(file)
    setup = Geometry(m.size, KSpaceLineOperator(m.size, m.size, 0.0), low_frequency_band(m.size, m.lf_fraction),
                     total, n_lf, k, ctx.cfg.encoder.pool)
    if policy == "flow":
        pol = get_experiment(ctx.experiment).flow_policy(ctx)
    elif policy == "random":
        pol = RandomPolicy(m.size)
    elif policy == "equispaced":
        pol = EquispacedPolicy(m.size)
    elif policy == "variable-density":
        pol = VariableDensityPolicy(m.size, ctx.cfg.eval.vd_power)
    elif policy == "low-frequency":
        pol = LowFrequencyPolicy(m.size)
    else:
        raise ConfigError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    x = normalise(torch.from_numpy(images), m.lf_fraction).to(ctx.device)
    acq = setup.acquired(x.shape[0], x.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        cond = lf_condition(setup.operator, x, acq, noisy=False, pool=ctx.cfg.encoder.pool)  # the file's noise is real
        masks = pol.propose(cond, k, acq, torch.Generator().manual_seed(seed)).cpu()
    ms = 1000 * (time.perf_counter() - t0) / max(1, x.shape[0])
    lf_lines = setup.lf.nonzero().flatten().tolist()

    def native(cols: list[int]) -> list[int]:
        return [int(round(native_cols // 2 + (j - m.size // 2) * native_cols / m.size)) for j in cols]

    slices = [{"slice": int(s), "lines": masks[i].nonzero().flatten().tolist(),
               "lines_native": native(masks[i].nonzero().flatten().tolist())} for i, s in enumerate(slice_idx)]
    return {
        "file": str(file), "experiment": ctx.experiment, "run_dir": str(run_dir), "policy": policy,
        "acceleration": acc, "image_size": [m.size, m.size], "columns": m.size, "native_columns": native_cols,
        "lines_per_slice": total, "low_frequency_lines": lf_lines, "policy_lines_per_slice": k,
        "ms_per_slice": round(ms, 2), "seed": seed, "slices": slices,
        "note": ("lines = column indices (0-based) of the k-space of the centre-cropped size x size image, LF band "
                 "included; lines_native = nearest column of the file's k-space at the same spatial frequency"),
        "masks": masks,
    }


def _native_cols(file: Path) -> int:
    from ..data.fastmri import inspect_volume

    return inspect_volume(file).cols


def run(args: argparse.Namespace) -> int:
    """Entry point for ``flowcs mri mask``; user errors raise :class:`FlowcsError` (the CLI prints one line)."""
    import numpy as np

    from ..errors import ConfigError
    from ..io import save_with, write_json

    if getattr(args, "mri_command", "mask") != "mask":
        raise ConfigError(f"unknown mri action {args.mri_command!r}")
    out = Path(args.out)
    if out.suffix not in (".json", ".npy"):
        raise ConfigError(f"{out}: --out must end in .json or .npy")
    payload = choose_lines(args.file, args.run_dir, args.acceleration, args.policy, args.slices == "all",
                           args.seed, args.device)
    masks = payload.pop("masks")
    if out.suffix == ".npy":
        save_with(out, lambda fh: np.save(fh, masks.numpy()))
    else:
        write_json(out, payload)
    print(f"{len(payload['slices'])} slice(s), {payload['lines_per_slice']} of {payload['columns']} lines each "
          f"({len(payload['low_frequency_lines'])} low-frequency + {payload['policy_lines_per_slice']} chosen by "
          f"{payload['policy']}, {payload['ms_per_slice']:.1f} ms/slice) → {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone ``python -m flowcs.experiments.mri_mask mri mask …`` with the CLI's error convention."""
    parser = argparse.ArgumentParser(prog="flowcs")
    parser.add_argument("--debug", action="store_true")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    from ..errors import FlowcsError

    try:
        return run(args)
    except FlowcsError as exc:
        if args.debug:
            raise
        print(f"flowcs: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
