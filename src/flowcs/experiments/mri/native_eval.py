"""Evaluate line policies on the acquisition's own grid: native masks → MoDL on the full native image → metrics.

The experiments score policies on the model's ``size × size`` crop; a scanner acquires the native grid. This
module closes that gap for a trained run: each image keeps its own ``rows × cols`` (Kellman 256 × 192 …, the
brain's 320 × 168 acquired lines, fastMRI's full slices), the mask is chosen by
:class:`~flowcs.experiments.mri.native.NativeMasker` (exactly ``round(cols / acceleration)`` native lines), and the
run's MoDL (convolutional, its data consistency is exact on any grid) reconstructs the full native image.

Metrics (docs/experiments.md): SSIM / PSNR / NMSE of magnitudes against the fully sampled image (single-coil:
the image; multi-coil: the SVD virtual coil the model reconstructs), data range = the reference's maximum. For
multi-coil files also ``ssim_rss``: SSIM against the root-sum-of-squares image after a least-squares scale of the
reconstruction's magnitude (the virtual coil's shading differs from RSS by a smooth factor; the scale is one
number per image, fitted on the full image, not on the policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...data.mri_files import crop_or_pad
from ...metrics import ssim
from ...operators.fft import complex_abs, fft2c, ifft2c, to_real
from ...tasks.modl import MRIReconstructionTask
from ..context import RunContext
from . import stages as S
from .data import load_splits
from .native import NativeMasker

__all__ = ["NativeImage", "split_images", "file_images", "evaluate_native", "native_markdown", "strict_wins",
           "POLICIES"]

POLICIES = ("flow", "low-frequency", "equispaced", "random", "full")


@dataclass
class NativeImage:
    name: str
    image: torch.Tensor  # complex (rows, cols)
    rss: torch.Tensor | None = None  # float (rows, cols), multi-coil files only


def split_images(ctx: RunContext, split: str = "test") -> list[NativeImage]:
    """The run's own split, every image on its native grid."""
    images = load_splits(ctx, (split,), native=True)[split]
    return [NativeImage(images.names[i], images.image(i)) for i in range(len(images))]


def file_images(paths) -> list[NativeImage]:
    """Centre slices of fastMRI / ISMRMRD files (multi-coil: with their RSS images)."""
    from ...data.kspace_files import find_kspace_files, read_kspace_images

    out = []
    for p in paths:
        for f in find_kspace_files(p):
            got = read_kspace_images(f)
            for i, s in enumerate(got.slices):
                rss = None if got.rss is None else torch.from_numpy(got.rss[i])
                out.append(NativeImage(f"{f.name}#slice{s}", torch.from_numpy(got.images[i]), rss))
    return out


def _scaled_ssim(pred_mag: torch.Tensor, ref: torch.Tensor) -> float:
    a = (pred_mag * ref).sum() / (pred_mag * pred_mag).sum().clamp_min(1e-12)
    return float(ssim((a * pred_mag)[None], ref[None])[0])


def evaluate_native(ctx: RunContext, images: list[NativeImage], policies=POLICIES, seeds: int = 3,
                    acceleration: float | None = None, progress=None) -> dict:
    """Per policy and image: metrics averaged over ``seeds`` noise seeds (deterministic policies: one)."""
    task: MRIReconstructionTask = S.trained_modl(ctx)
    dev = ctx.device
    maskers = {p: NativeMasker(ctx, p, acceleration) for p in policies if p != "full"}
    size = ctx.cfg.mri.size
    rows = {p: {"ssim": [], "psnr": [], "nmse": [], "ssim_rss": []} for p in policies}
    info = []
    for item in images:
        x = item.image.to(torch.complex64)
        cols = x.shape[-1]
        any_masker = next(iter(maskers.values()), None)
        total, lf = any_masker.budget(cols, f"{item.name}: ") if any_masker else (cols, None)
        kspace = fft2c(x)
        lf_image = ifft2c(kspace * lf) if lf is not None else x
        scale = (any_masker.lf_scale(lf_image[None])[0] if any_masker
                 else crop_or_pad(lf_image, size).abs().max().clamp_min(1e-12))  # the masker's normalisation
        target = to_real((x / scale)[None]).to(dev)
        k_scaled = (kspace / scale)[None].to(dev)  # the scaled full k-space, masked per policy and seed
        rss = None if item.rss is None else (item.rss / scale).to(dev)
        info.append({"name": item.name, "rows": int(x.shape[0]), "columns": int(cols), "lines": int(total)})
        for p in policies:
            deterministic = p in ("low-frequency", "full")  # equispaced draws its offset per seed
            vals = {k: [] for k in rows[p]}
            for seed in range(1 if deterministic else seeds):
                if p == "full":
                    mask = torch.ones(1, cols, dtype=torch.bool)
                else:
                    mask = maskers[p].masks(x[None], seed, f"{item.name}: ").native
                m = mask.to(dev)
                zf = to_real(ifft2c(k_scaled * m[:, None, :]))
                with torch.inference_mode():
                    pred = task.model(zf, m.float())
                    met = task.metrics(pred, target)
                for k in ("ssim", "psnr", "nmse"):
                    vals[k].append(float(met[k][0]))
                if rss is not None:
                    vals["ssim_rss"].append(_scaled_ssim(complex_abs(pred)[0, 0], rss))
            for k, v in vals.items():
                rows[p][k].append(float(np.mean(v)) if v else None)
        if progress is not None:
            progress(item.name)
    out = {"images": info, "seeds": seeds, "acceleration": next(iter(maskers.values())).acceleration
           if maskers else acceleration, "policies": {}}
    for p, r in rows.items():
        out["policies"][p] = {k: {"per_image": v, "mean": float(np.mean([u for u in v if u is not None]))
                                  if any(u is not None for u in v) else None} for k, v in r.items()}
    return out


TIE = 1e-6  # |ΔSSIM| at or below this is a tie (the flow's mean over identical seeds differs in the last bits)


def strict_wins(flow: list[float], other: list[float]) -> tuple[int, int]:
    """(images where the flow is above ``other`` by more than :data:`TIE`, ties)."""
    d = [a - b for a, b in zip(flow, other)]
    return sum(x > TIE for x in d), sum(abs(x) <= TIE for x in d)


def native_markdown(payload: dict) -> str:
    """Mean table per policy + the paired per-image SSIM table flow vs the central block."""
    pol = payload["policies"]
    has_rss = any(v is not None for v in pol["flow"]["ssim_rss"]["per_image"])
    head = "| policy | SSIM | PSNR (dB) | NMSE |" + (" SSIM vs RSS |" if has_rss else "")
    lines = [f"# Policies on each image's own grid ({payload.get('experiment', 'mri')}, "
             f"{payload['acceleration']:g}x)", "",
             f"Command: `{payload.get('command')}`  ", f"Commit: `{payload.get('git_commit')}`; "
             f"{len(payload['images'])} image(s); flow and random averaged over {payload['seeds']} seed(s).", "",
             head, "|---|---|---|---|" + ("---|" if has_rss else "")]
    for name, r in pol.items():
        row = f"| {name} | {r['ssim']['mean']:.4f} | {r['psnr']['mean']:.2f} | {r['nmse']['mean']:.4f} |"
        if has_rss:
            row += f" {r['ssim_rss']['mean']:.4f} |" if r["ssim_rss"]["mean"] is not None else " – |"
        lines.append(row)
    lines += ["", "| image | columns | lines | SSIM flow | SSIM central block | flow − block |",
              "|---|---|---|---|---|---|"]
    f, b = pol["flow"]["ssim"]["per_image"], pol["low-frequency"]["ssim"]["per_image"]
    for im, fv, bv in zip(payload["images"], f, b):
        lines.append(f"| {im['name']} | {im['columns']} | {im['lines']} | {fv:.4f} | {bv:.4f} | {fv - bv:+.4f} |")
    wins, ties = strict_wins(f, b)
    lines += ["", f"Flow strictly above the central block on {wins} of {len(f)} images ({ties} ties: the same SSIM "
              f"to {TIE:g}).", ""]
    return "\n".join(lines)
