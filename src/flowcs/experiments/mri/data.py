"""MRI data as the experiments see it: the sampling geometry (:class:`Geometry`), the per-image normalisation,
augmented training views, the flow's LF condition, and the train / val / test splits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...acquisition import Magnitude
from ...data.mri_files import ImageSet, build_mri_splits, crop_or_pad, lf_scale, random_view
from ...operators.fft import to_real
from ...operators.kspace import KSpaceLineOperator, low_frequency_band
from ..context import RunContext
from .config import Config, line_budget

__all__ = ["Geometry", "normalise", "prepare", "lf_condition", "load_splits", "describe_data", "set_threads"]


@dataclass
class Geometry:
    """What every stage derives from the sampling config: the operator, the LF band and the line budget."""

    size: int
    operator: KSpaceLineOperator
    lf: torch.Tensor  # bool (N,)
    total: int
    n_lf: int
    k: int  # policy lines
    pool: int = 1  # the condition (zero-filled magnitude) is average-pooled by this factor before the encoder

    @classmethod
    def from_cfg(cls, cfg: Config) -> Geometry:
        m = cfg.mri
        total, n_lf, k = line_budget(m.size, m.acceleration, m.lf_fraction, "mri: ")
        return cls(m.size, KSpaceLineOperator(m.size, m.size, m.noise_pct),
                   low_frequency_band(m.size, m.lf_fraction), total, n_lf, k, cfg.encoder.pool)

    def acquired(self, batch: int, device=None) -> torch.Tensor:
        return self.lf.to(device).expand(batch, -1).clone()

    def condition_fn(self) -> Magnitude:
        """How the policy's condition is built from a zero-filled measurement."""
        return Magnitude(self.pool)


def normalise(views: torch.Tensor, lf_fraction: float) -> torch.Tensor:
    """Complex (B, S, S) → real (B, 2, S, S) divided by each image's LF-band scale (see data.mri_files)."""
    return to_real(views / lf_scale(views, lf_fraction)[:, None, None])


def prepare(images: ImageSet, idx, cfg: Config, generator: torch.Generator | None = None) -> torch.Tensor:
    """Normalised (B, 2, S, S) batch: augmented views with ``generator``, centre crop/pad without."""
    a, s = cfg.augment, cfg.mri.size
    views = []
    for i in idx:
        img = images.image(int(i))
        if generator is None:
            views.append(crop_or_pad(img, s))
        else:
            views.append(random_view(img, s, generator, flips=a.flips, transpose=a.transpose,
                                     max_shift=a.max_shift, random_phase=a.random_phase))
    return normalise(torch.stack(views), cfg.mri.lf_fraction)


def lf_condition(op: KSpaceLineOperator, x: torch.Tensor, lf: torch.Tensor, noisy: bool = True,
                 generator: torch.Generator | None = None, pool: int = 1) -> torch.Tensor:
    """(B, 1, S/pool, S/pool) magnitude of the zero-filled LF-band reconstruction: the flow's condition."""
    acquired = lf if lf.ndim == 2 else lf.expand(x.shape[0], -1)
    return Magnitude(pool)(op, op.zero_filled(op.measure(x, lf, noisy=noisy, generator=generator), lf), acquired)


def load_splits(ctx: RunContext, splits=("train", "val", "test"), native: bool = False) -> dict[str, ImageSet]:
    """The run's splits; ``native=True`` keeps fastMRI slices on their own full grid (Kellman images always are)."""
    d = ctx.cfg.data
    return build_mri_splits(d.source, ctx.data_root, None if native else ctx.cfg.mri.size, kellman_dir=d.kellman_dir,
                            val_files=d.val_files, test_files=d.test_files, brain=d.brain_test,
                            fastmri_dir=d.fastmri_dir, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                            split_seed=d.split_seed, half_width=d.half_slices, splits=splits)


def describe_data(ctx: RunContext, splits: dict[str, ImageSet]) -> dict:
    d = ctx.cfg.data
    out = {"source": d.source, "size": ctx.cfg.mri.size}
    if d.source == "kellman":
        out["root"] = str(ctx.data_root / d.kellman_dir)
        out["note"] = ("real complex MR images (ISMRM 2012 fat-water challenge, Kellman; coil-combined), "
                       "k-space = centred orthonormal FFT of each echo; split by file, never by echo")
        if d.brain_test:
            out["brain_test"] = str(ctx.data_root / d.brain_test) + " (8-coil k-space, SVD-compressed to 1 coil)"
    else:
        out["root"] = str(d.fastmri_dir)
        out["note"] = (f"fastMRI .h5 volumes (multi-coil: one SVD virtual coil per slice), split by volume, "
                       f"centre ±{d.half_slices} slices")
    for name, s in splits.items():
        out[name] = s.describe()
    return out


def set_threads(cfg: Config) -> None:
    """``threads`` of the config (None: torch's default)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
