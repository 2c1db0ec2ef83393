"""``flowcs mri mask FILE_OR_FOLDER --acceleration 8 --run-dir runs/mri-8x --out lines.json``.

Given raw k-space (fastMRI single- or multi-coil ``.h5``, ISMRMRD ``.h5``; a folder of them) and a trained MRI
run, output the k-space lines a policy chooses for every selected slice **on the file's own phase-encode
grid** — what the scanner would play out (:mod:`flowcs.experiments.mri.native`): the LF band and the budget
``round(cols / acceleration)`` are counted on that grid, the policy sees only the native LF lines, and its
choice on the model's ``size``-column grid is mapped to exactly that many native lines
(:mod:`flowcs.operators.line_grid`).

Output (written atomically, only after every slice of a file succeeded; a folder gives one file per volume):

* ``.json``: run/file metadata, the native LF lines, the effective acceleration ``cols / lines``, and per
  slice the chosen native columns (``lines``, 0-based, LF band included) and the model-grid choice
  (``lines_model``);
* ``.npy``: a bool array (slices, cols) of the native masks (LF band included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Only light imports at module level: the CLI builds its parser (add_parser) on every call.
SLICE_HALF_WIDTH = 10  # = flowcs.data.fastmri.SLICE_HALF_WIDTH (checked in tests)
POLICIES = ("flow", "random", "equispaced", "variable-density", "low-frequency")  # = mri.native.POLICIES


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``mri`` (with the ``mask`` action) to an argparse sub-parser collection; returns the ``mri`` parser."""
    p = subparsers.add_parser("mri", help="MRI tools (choose k-space lines for fastMRI / ISMRMRD raw data)")
    sub = p.add_subparsers(dest="mri_command", required=True, metavar="ACTION")
    m = sub.add_parser("mask", help="output the k-space lines a trained policy chooses, per slice, on the file's grid")
    m.add_argument("file", metavar="PATH", help="fastMRI single- or multi-coil .h5, ISMRMRD .h5, or a folder of them")
    m.add_argument("--acceleration", type=float, default=None,
                   help="acceleration factor; lines = round(cols / acceleration) on the file's own grid, LF band "
                        "included (default: the run's)")
    m.add_argument("--run-dir", default=None, metavar="DIR",
                   help="a trained mri-4x / mri-8x run directory (default: the pretrained mri-8x policy shipped with "
                        "flowcs, see flowcs/pretrained/mri-8x/PROVENANCE.json)")
    m.add_argument("--out", required=True, metavar="PATH",
                   help="output .json (lines per slice) or .npy (masks); for a folder: an output folder")
    m.add_argument("--format", default="json", choices=["json", "npy"],
                   help="file type written per volume when PATH is a folder (default json)")
    m.add_argument("--policy", default="flow", choices=POLICIES, help="policy choosing the lines (default flow)")
    m.add_argument("--slices", default="center", choices=["center", "all"],
                   help=f"center: centre ±{SLICE_HALF_WIDTH} slices (default); all: every slice")
    m.add_argument("--seed", type=int, default=0, help="seed of the flow noise / random baselines (default 0)")
    m.add_argument("--device", default="cpu", help="auto | cpu | cuda (default cpu)")
    e = sub.add_parser("evaluate", help="score policies on each image's own grid: native masks, MoDL, SSIM/PSNR")
    e.add_argument("paths", nargs="*", metavar="PATH",
                   help="fastMRI / ISMRMRD .h5 files or folders (default: the run's own test images)")
    e.add_argument("--run-dir", default=None, metavar="DIR",
                   help="a trained mri-4x / mri-8x run directory (default: the shipped pretrained mri-8x policy)")
    e.add_argument("--out", required=True, metavar="FILE", help="output .json (a .md table is written beside it)")
    e.add_argument("--acceleration", type=float, default=None, help="acceleration factor (default: the run's)")
    e.add_argument("--split", default="test", choices=["test", "val"], help="the run's split when no PATH is given")
    e.add_argument("--seeds", type=int, default=3, help="seeds of the flow noise / random masks (default 3)")
    e.add_argument("--device", default="cpu", help="auto | cpu | cuda (default cpu)")
    return p


def choose_lines(file: str | Path, run_dir: str | Path | None = None, acceleration: float | None = None,
                 policy: str = "flow", all_slices: bool = False, seed: int = 0, device: str = "cpu",
                 masker=None) -> dict:
    """Lines for one file (no file written). Returns the JSON payload plus ``masks`` (bool (slices, cols)).

    ``masker`` (a :class:`~flowcs.experiments.mri.native.NativeMasker`) reuses a loaded run across files.
    """
    from ..data.kspace_files import read_kspace_images
    from .context import load_run
    from .mri.native import NativeMasker

    file = Path(file)
    if masker is None:
        masker = NativeMasker(load_run(run_dir, device, experiments=("mri-4x", "mri-8x")), policy, acceleration)
    data = read_kspace_images(file, None if all_slices else SLICE_HALF_WIDTH)
    out = masker.masks(data.images, seed, f"{file}: ")
    ctx = masker.ctx
    slices = [{"slice": int(s), "lines": out.native[i].nonzero().flatten().tolist(),
               "lines_model": out.model[i].nonzero().flatten().tolist(),
               "lines_on_empty_columns": int((out.native[i] & out.empty[i]).sum())} for i, s in enumerate(data.slices)]
    wasted = sum(s["lines_on_empty_columns"] for s in slices)
    if bool((out.empty[:, out.lf]).any()):
        print(f"flowcs: warning: {file}: the low-frequency band holds all-zero k-space columns, so it is not "
              "contiguous in the acquired data (zero-padded or partial k-space?)", file=sys.stderr)
    elif wasted:
        print(f"flowcs: warning: {file}: {wasted} chosen line(s) fall on all-zero k-space columns (zero padding?): "
              "they measure nothing", file=sys.stderr)
    return {
        "file": str(file), "format": data.format, "coils": data.coils, "experiment": ctx.experiment,
        "run_dir": str(ctx.run_dir), "policy": masker.policy_name, "acceleration": masker.acceleration,
        "columns": out.cols, "lines_per_slice": out.total,
        "effective_acceleration": round(out.cols / out.total, 4),
        "low_frequency_lines": out.lf.nonzero().flatten().tolist(), "model_columns": masker.size,
        "empty_columns": int(out.empty.any(0).sum()), "ms_per_slice": round(out.ms_per_slice, 2), "seed": seed,
        "slices": slices,
        "note": ("lines = column indices (0-based) of the file's own k-space grid (multi-coil: every coil), LF band "
                 "included; lines_model = the policy's choice on the run's model grid (flowcs.operators.line_grid)"),
        "masks": out.native,
    }


def _write(out: Path, payload: dict) -> None:
    import numpy as np

    from ..io import save_with, write_json

    masks = payload.pop("masks")
    if out.suffix == ".npy":
        save_with(out, lambda fh: np.save(fh, masks.numpy()))
    else:
        write_json(out, payload)


def _run_dir(args: argparse.Namespace):
    """``--run-dir``, or the pretrained policy shipped with flowcs (said once on stderr)."""
    if args.run_dir is not None:
        return args.run_dir
    from ..pretrained import DEFAULT, path

    print(f"flowcs: no --run-dir: using the pretrained {DEFAULT} policy shipped with flowcs ({path()})",
          file=sys.stderr)
    return path()


def evaluate(args: argparse.Namespace) -> int:
    """``flowcs mri evaluate``: policies on each image's own grid (:mod:`flowcs.experiments.mri.native_eval`)."""
    import time

    from tqdm.auto import tqdm

    from ..errors import ConfigError
    from ..io import atomic_write, write_json
    from ..runinfo import git_commit
    from .context import load_run
    from .mri.native_eval import evaluate_native, file_images, native_markdown, split_images

    out = Path(args.out)
    if out.suffix != ".json":
        raise ConfigError(f"{out}: --out must end in .json")
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    if not args.paths and args.run_dir is None:
        raise ConfigError("the shipped pretrained policy has no data splits: give PATHs (fastMRI / ISMRMRD files)")
    ctx = load_run(_run_dir(args), args.device, experiments=("mri-4x", "mri-8x"))
    images = file_images(args.paths) if args.paths else split_images(ctx, args.split)
    t0 = time.perf_counter()
    with tqdm(total=len(images), desc="images", unit="img") as bar:
        payload = evaluate_native(ctx, images, seeds=args.seeds, acceleration=args.acceleration,
                                  progress=lambda name: bar.update())
    command = ["flowcs", "mri", "evaluate", *args.paths, *(["--run-dir", str(args.run_dir)] if args.run_dir else []),
               "--out", str(out), "--split", args.split, "--seeds", str(args.seeds),
               *(["--acceleration", f"{args.acceleration:g}"] if args.acceleration else []), "--device", args.device]
    payload.update({"experiment": ctx.experiment, "run_dir": str(ctx.run_dir), "git_commit": git_commit(),
                    "source": [str(p) for p in args.paths] or f"the run's {args.split} split",
                    "split": None if args.paths else args.split, "wall_time_s": round(time.perf_counter() - t0, 1),
                    "command": " ".join(command)})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, payload)
    with atomic_write(out.with_suffix(".md"), "w") as fh:
        fh.write(native_markdown(payload))
    flow, block = payload["policies"]["flow"]["ssim"]["mean"], payload["policies"]["low-frequency"]["ssim"]["mean"]
    print(f"{len(images)} image(s) on their own grids: SSIM flow {flow:.4f}, central block {block:.4f} → {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point for ``flowcs mri mask`` / ``evaluate``; user errors raise :class:`FlowcsError` (one line)."""
    from tqdm.auto import tqdm

    from ..data.kspace_files import find_kspace_files
    from ..errors import ConfigError
    from ..pretrained import provenance
    from .context import load_run
    from .mri.native import NativeMasker

    if getattr(args, "mri_command", "mask") == "evaluate":
        return evaluate(args)
    if getattr(args, "mri_command", "mask") != "mask":
        raise ConfigError(f"unknown mri action {args.mri_command!r}")
    out = Path(args.out)
    folder = Path(args.file).is_dir()
    if not folder and out.suffix not in (".json", ".npy"):
        raise ConfigError(f"{out}: --out must end in .json or .npy")
    if folder and out.suffix in (".json", ".npy"):
        raise ConfigError(f"{out}: for a folder of volumes --out is an output folder (one file per volume)")
    files = find_kspace_files(args.file)
    ctx = load_run(_run_dir(args), args.device, experiments=("mri-4x", "mri-8x"))
    masker = NativeMasker(ctx, args.policy, args.acceleration)
    for f in tqdm(files, desc="volumes", disable=len(files) == 1, unit="vol"):
        payload = choose_lines(f, acceleration=args.acceleration, policy=args.policy,
                               all_slices=args.slices == "all", seed=args.seed, masker=masker)
        target = out / f"{f.stem}.{args.format}" if folder else out
        summary = (f"{f.name}: {len(payload['slices'])} slice(s), {payload['lines_per_slice']} of "
                   f"{payload['columns']} lines each (effective acceleration {payload['effective_acceleration']:.2f}x "
                   f"on the file's grid; {len(payload['low_frequency_lines'])} low-frequency + the rest chosen by "
                   f"{payload['policy']}, {payload['ms_per_slice']:.1f} ms/slice) → {target}")
        if args.run_dir is None:
            payload["pretrained"] = provenance()
        if folder:
            target.parent.mkdir(parents=True, exist_ok=True)
        _write(target, payload)
        tqdm.write(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone ``python -m flowcs.experiments.mri_mask mri mask …`` with the CLI's error convention."""
    from ..cli_common import standalone_main

    return standalone_main(add_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
