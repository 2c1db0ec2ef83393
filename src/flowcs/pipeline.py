"""Use flowcs masks inside a fastMRI-style data pipeline: :class:`FlowMaskFunc`.

fastMRI's mask functions (``fastmri.data.subsample.MaskFunc``, fastMRI >= 0.2) are called as
``mask_func(shape, offset=None, seed=None) -> (mask, num_low_frequencies)``: ``shape`` is the shape of the
k-space tensor in fastMRI's real view (``(..., rows, cols, 2)``), ``mask`` a float tensor of the same rank
that is 1 on the sampled columns and broadcasts over everything else (shape ``(1, …, 1, cols, 1)``).
That call never sees the data, but an adaptive mask depends on the measured low-frequency lines. So:

    flow = FlowMaskFunc("runs/mri-8x")            # load the trained run once
    mask_func = flow.bind(kspace)                 # this slice's k-space: (rows, cols) or (coils, rows, cols)
    masked, mask, n_lf = fastmri.data.transforms.apply_mask(kspace_t, mask_func, seed=seed)

``bind`` returns an object that honours exactly the ``MaskFunc`` call contract for that slice; the mask is on
the slice's own column grid (:mod:`flowcs.experiments.mri.native`), identical to ``flowcs mri mask``'s lines
for the same file, slice and seed. ``offset`` (equispaced masks' phase) has no meaning for an adaptive mask
and is accepted and ignored; ``seed`` (an int or fastMRI's ``tuple(map(ord, fname))``) seeds the flow noise.
flowcs does not depend on the ``fastmri`` package (it pulls in torchvision); tests state the contract.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["BoundMaskFunc", "FlowMaskFunc", "seed_to_int"]


def seed_to_int(seed: int | Sequence[int] | None) -> int:
    """fastMRI passes ``None``, an int, or ``tuple(map(ord, fname))``; flowcs seeds need one int (stable, no hash)."""
    if seed is None:
        return 0
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    return zlib.crc32(np.asarray(list(seed), dtype=np.int64).tobytes())


def _slice_image(kspace) -> np.ndarray:
    """One slice's complex image from its k-space: complex (rows, cols) or (coils, rows, cols), or fastMRI's
    real view (…, rows, cols, 2)."""
    from .data.fastmri import slice_image

    k = kspace.detach().cpu().numpy() if isinstance(kspace, torch.Tensor) else np.asarray(kspace)
    if not np.iscomplexobj(k):
        if k.ndim < 3 or k.shape[-1] != 2:
            raise ConfigError(f"k-space of shape {k.shape} is neither complex nor a (…, rows, cols, 2) real view")
        k = k[..., 0] + 1j * k[..., 1]
    if k.ndim not in (2, 3):
        raise ConfigError(f"bind() takes one slice, (rows, cols) or (coils, rows, cols); got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise ConfigError("k-space contains NaN/Inf values")
    return slice_image(k.astype(np.complex64))


class BoundMaskFunc:
    """A fastMRI ``MaskFunc`` for one slice: ``(shape, offset=None, seed=None) -> (mask, num_low_frequencies)``."""

    def __init__(self, masker, image: np.ndarray):
        self.masker, self.image = masker, image
        self.cols = int(image.shape[-1])
        self._cache: dict[int, torch.Tensor] = {}

    def lines(self, seed: int | Sequence[int] | None = None) -> list[int]:
        """The sampled columns (0-based, LF band included) for ``seed``."""
        return self._native(seed_to_int(seed)).nonzero().flatten().tolist()

    def _native(self, seed: int) -> torch.Tensor:
        if seed not in self._cache:
            self._cache[seed] = self.masker.masks(self.image[None], seed).native[0]
        return self._cache[seed]

    def __call__(self, shape: Sequence[int], offset: int | None = None,
                 seed: int | Sequence[int] | None = None) -> tuple[torch.Tensor, int]:
        shape = tuple(int(s) for s in shape)
        if len(shape) < 3 or shape[-1] != 2:
            raise ConfigError(f"shape {shape} must be fastMRI's real view (…, rows, cols, 2) of the k-space")
        if shape[-2] != self.cols:
            raise ConfigError(f"shape {shape} has {shape[-2]} columns; the bound k-space has {self.cols}")
        mask_shape = [1] * len(shape)
        mask_shape[-2] = self.cols
        mask = self._native(seed_to_int(seed)).to(torch.float32).reshape(mask_shape)
        _, lf = self.masker.budget(self.cols)
        return mask, int(lf.sum())


class FlowMaskFunc:
    """Load a trained mri-4x / mri-8x run once; :meth:`bind` a slice's k-space to get its ``MaskFunc``."""

    def __init__(self, run_dir: str | Path, acceleration: float | None = None, policy: str = "flow",
                 device: str = "cpu"):
        from .experiments.context import load_run
        from .experiments.mri.native import NativeMasker

        ctx = load_run(run_dir, device, experiments=("mri-4x", "mri-8x"))
        self.masker = NativeMasker(ctx, policy, acceleration)

    @property
    def acceleration(self) -> float:
        return self.masker.acceleration

    def bind(self, kspace) -> BoundMaskFunc:
        return BoundMaskFunc(self.masker, _slice_image(kspace))
