"""Choose k-space lines on an acquisition's own grid with a trained MRI run (``flowcs mri mask``, FlowMaskFunc).

What a scanner has before the policy runs is the native low-frequency band, so that is all the policy sees:

1. the LF band and the line budget are defined on the native grid (:func:`flowcs.operators.line_grid.native_budget`);
2. the condition is the zero-filled image of the native LF lines, cropped or padded to the model's
   ``size × size`` in image space (the training geometry), divided by its own peak (the run's LF-scale
   normalisation) and turned into the model's magnitude condition;
3. the policy chooses its lines on the model grid; sequential policies (``flow.rounds > 1``) observe, before
   each round, the native lines covered by what they have chosen so far;
4. the model-grid mask is mapped to exactly ``total`` native lines (:func:`flowcs.operators.line_grid.to_native`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from ...data.mri_files import crop_or_pad
from ...errors import ConfigError
from ...operators.fft import fft2c, ifft2c, to_real
from ...operators.line_grid import model_columns, native_budget, to_native
from ...policies import RandomPolicy
from ...policies.cartesian import EquispacedPolicy, LowFrequencyPolicy, VariableDensityPolicy
from ..context import RunContext
from .config import line_budget
from .data import Geometry

__all__ = ["POLICIES", "NativeMasks", "NativeMasker"]

POLICIES = ("flow", "random", "equispaced", "variable-density", "low-frequency")
#: a k-space column with less than this share of the strongest column's energy counts as empty (zero padding;
#: an FFT round trip leaves ~1e-14 of float32 noise there)
EMPTY = 1e-10


@dataclass
class NativeMasks:
    native: torch.Tensor  # (n, cols) bool, exactly ``total`` lines each, LF band included
    model: torch.Tensor  # (n, size) bool, the policy's choice on the model grid
    total: int
    lf: torch.Tensor  # (cols,) bool native LF band
    ms_per_slice: float
    empty: torch.Tensor  # (n, cols) bool: all-zero k-space columns (zero padding: a line there measures nothing)

    @property
    def cols(self) -> int:
        return int(self.native.shape[1])


class NativeMasker:
    """A loaded run + policy that turns complex images (n, rows, cols) into masks on their own column grid."""

    def __init__(self, ctx: RunContext, policy: str = "flow", acceleration: float | None = None):
        from .stages import trained_flow

        m = ctx.cfg.mri
        self.ctx, self.size, self.lf_fraction = ctx, m.size, m.lf_fraction
        self.acceleration = float(m.acceleration if acceleration is None else acceleration)
        try:
            total, n_lf, self.k = line_budget(m.size, self.acceleration, m.lf_fraction)
        except ConfigError as exc:
            raise ConfigError(f"on the run's {m.size}-column model grid: {exc}") from None
        self.geometry = dataclasses.replace(Geometry.from_cfg(ctx.cfg), total=total, n_lf=n_lf, k=self.k)
        self.policy_name = policy
        if policy == "flow":  # its centre prior covers this masker's budget, not necessarily the run's
            self.policy = trained_flow(ctx, geometry=self.geometry)
        elif policy == "random":
            self.policy = RandomPolicy(m.size)
        elif policy == "equispaced":
            self.policy = EquispacedPolicy(m.size)
        elif policy == "variable-density":
            self.policy = VariableDensityPolicy(m.size, ctx.cfg.eval.vd_power)
        elif policy == "low-frequency":
            self.policy = LowFrequencyPolicy(m.size)
        else:
            raise ConfigError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")

    def budget(self, cols: int, where: str = "") -> tuple[int, torch.Tensor]:
        try:
            return native_budget(cols, self.acceleration, self.lf_fraction)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc} (native grid of {cols} columns)") from None

    def lf_scale(self, lf_image: torch.Tensor) -> torch.Tensor:
        """(n,) peak of the model's view of the native LF image: the run's per-image normalisation (after it the
        LF condition peaks at 1, as in training)."""
        return crop_or_pad(lf_image, self.size).abs().flatten(1).amax(1).clamp_min(1e-12)

    def _model_view(self, native_image: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Native zero-filled complex images (n, rows, cols) → real (n, 2, size, size) divided by ``scale``."""
        return to_real(crop_or_pad(native_image, self.size) / scale[:, None, None])

    def masks(self, images: np.ndarray | torch.Tensor, seed: int = 0, where: str = "") -> NativeMasks:
        """Masks for complex images (n, rows, cols) on their own ``cols``-column grid (module doc); every image's
        policy noise is seeded with ``seed``, as fastMRI seeds every slice of a volume alike."""
        x = torch.as_tensor(np.asarray(images, np.complex64) if isinstance(images, np.ndarray) else images)
        seed = int(seed)
        if x.ndim != 3 or not x.is_complex():
            raise ConfigError(f"{where}expected complex images (n, rows, cols), got {tuple(x.shape)} {x.dtype}")
        cols = x.shape[-1]
        total, lf = self.budget(cols, where)
        dev = self.ctx.device
        kspace = fft2c(x).to(dev)
        lf, cover = lf.to(dev), model_columns(cols, self.size).to(dev)
        g = self.geometry

        lf_image = ifft2c(kspace * lf)
        scale = self.lf_scale(lf_image)

        def observe_for(i: int):
            def observe(taken: torch.Tensor) -> torch.Tensor:  # model-grid lines → the native lines they cover
                native = taken.bool()[:, cover] | lf
                return self._model_view(ifft2c(kspace[i:i + 1] * native[:, None, :]), scale[i:i + 1])
            return observe

        acq = g.acquired(1, dev)
        t0 = time.perf_counter()
        with torch.inference_mode():
            cond = g.condition_fn()(g.operator, self._model_view(lf_image, scale), None)
            # one generator per slice, seeded alike: a slice's mask does not depend on which other slices are asked
            model = torch.cat([self.policy.propose(cond[i:i + 1], self.k, acq, torch.Generator().manual_seed(seed),
                                                   observe_for(i)) for i in range(x.shape[0])])
            native = to_native(model, cols, total, lf)
        ms = 1000 * (time.perf_counter() - t0) / max(1, x.shape[0])
        energy = kspace.abs().square().sum(1)  # (n, cols)
        empty = energy <= EMPTY * energy.amax(1, keepdim=True)
        return NativeMasks(native.cpu(), model.cpu(), total, lf.cpu(), ms, empty.cpu())
