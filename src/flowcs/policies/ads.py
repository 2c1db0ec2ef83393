"""ADS — active subsampling with a generative prior (after Nolan et al., "Active diffusion subsampling").

A small **flow-matching image prior** of our own (:class:`ImagePriorNet`, a time-conditioned U-Net trained
with the rectified-flow loss on the experiment's training images, :class:`FlowPriorObjective`) gives
posterior samples of the image given the current measurements by **data-consistency guided sampling**:
at each of the ``steps`` Euler steps of the learned flow (noise at t = 0 → image at t = 1)

    x̂1 = x_t + (1 − t)·v,   x̂0 = x_t − t·v          (the linear path's endpoint estimates)
    x̂1 ← x̂1 − A_mᴴ A_m x̂1 + A_mᴴ y                  (replace the measured part by the measurement)
    x_{t+Δ} = (1 − t − Δ)·x̂0 + (t + Δ)·x̂1

so every sample agrees exactly with the measurements at t = 1 (for masking operators A_mᴴ A_m is the
orthogonal projection onto the measured locations). ``samples`` posterior samples per image run in one
batch. The next ``per_round`` locations are those where the samples **disagree most**: the variance
across samples of the fully-sampled measurement A x̂ (pixel values; k-space values), summed over each
location (the colour channels of a pixel; the rows and real/imaginary parts of a k-space column). Measure
there, repeat until the budget is spent. The paper acquires one location per round (``per_round = 1``,
our MRI setting); for pixel budgets of tens to hundreds of locations we acquire several per round
(a scaling choice recorded in every results file).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..flow.nets.time_embedding import SinusoidalTimeEmbedding
from ..layers import conv_block, crop_padding, pad_to_multiple
from ..masks import select_topk
from ..operators.base import Operator
from ..operators.kspace import KSpaceLineOperator
from ..operators.pixel import PixelOperator
from ..rng import rand_rows, randn_rows
from .base import Policy

__all__ = ["ImagePriorNet", "FlowPriorObjective", "ADSPolicy", "location_sums", "round_sizes"]


class ImagePriorNet(nn.Module):
    """Velocity v_θ(z_t, t) of an unconditional image flow: a small GroupNorm U-Net, time added per level.

    ``shift``/``scale`` map images to the prior's space z = (x − shift)/scale (buffers, saved with it).
    """

    def __init__(self, channels: int, widths: Sequence[int] = (16, 32, 64), time_dim: int = 64,
                 shift: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.widths = tuple(widths)
        chans = [channels, *self.widths]
        self.enc = nn.ModuleList(conv_block(a, b, norm="group") for a, b in zip(chans[:-1], chans[1:]))
        self.pool = nn.MaxPool2d(2)
        self.mid = conv_block(self.widths[-1], self.widths[-1], norm="group")
        self.up = nn.ModuleList(nn.ConvTranspose2d(w, w, 2, stride=2) for w in reversed(self.widths))
        dec_out = [*reversed(self.widths[:-1]), self.widths[0]]
        self.dec = nn.ModuleList(conv_block(2 * w, o, norm="group")
                                 for w, o in zip(reversed(self.widths), dec_out))
        self.time = nn.Sequential(SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, time_dim), nn.SiLU())
        self.t_enc = nn.ModuleList(nn.Linear(time_dim, w) for w in self.widths)
        self.t_mid = nn.Linear(time_dim, self.widths[-1])
        self.out = nn.Conv2d(self.widths[0], channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("shift", torch.tensor(float(shift)))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z, pads = pad_to_multiple(z, 2 ** len(self.widths))
        emb = self.time(t)
        skips = []
        h = z
        for i, (block, proj) in enumerate(zip(self.enc, self.t_enc)):
            h = block(h if i == 0 else self.pool(h)) + proj(emb)[:, :, None, None]
            skips.append(h)
        h = self.mid(self.pool(h)) + self.t_mid(emb)[:, :, None, None]
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            h = dec(torch.cat([up(h), skip], dim=1))
        return crop_padding(self.out(h), pads)

    def to_z(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def to_x(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale + self.shift


class FlowPriorObjective(nn.Module):
    """Rectified-flow loss ‖v_θ(z_t, t) − (z1 − z0)‖² with z1 = a training image, z0 ~ N(0, I)."""

    def __init__(self, net: ImagePriorNet):
        super().__init__()
        self.model = net

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> dict:
        z1 = self.model.to_z(x)
        b = z1.shape[0]
        z0 = randn_rows(b, *z1.shape[1:], generator=generator, device=z1.device)
        t = rand_rows(b, generator=generator, device=z1.device)
        tt = t.reshape(-1, 1, 1, 1)
        v = self.model((1 - tt) * z0 + tt * z1, t)
        return {"loss": ((v - (z1 - z0)) ** 2).mean()}


def location_sums(operator: Operator, values: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) values in measurement space → (B, N) sums over each location's entries."""
    b = values.shape[0]
    if isinstance(operator, PixelOperator):
        return values.sum(1).reshape(b, operator.n_locations)
    if isinstance(operator, KSpaceLineOperator):
        return values.sum(dim=(1, 2))
    # any operator whose mask enters linearly through mask_to_image: the gradient of Σ map(m)·v w.r.t. m
    with torch.inference_mode(False), torch.enable_grad():
        m = torch.zeros(b, operator.n_locations, requires_grad=True)
        s = (operator.mask_to_image(m) * values.detach().clone()).sum()
        return torch.autograd.grad(s, m)[0]


def round_sizes(budgets: Sequence[int], per_round: int) -> list[int]:
    """Acquisition sizes (≤ ``per_round``) that pass exactly through every budget of ``budgets``."""
    sizes, done = [], 0
    for b in sorted(set(budgets)):
        while done < b:
            c = min(per_round, b - done)
            sizes.append(c)
            done += c
    return sizes


class ADSPolicy(Policy):
    """Sequential: posterior samples from the flow prior → measure where they disagree most → repeat."""

    name = "ads"
    adaptive = True
    sequential = True

    def __init__(self, prior: ImagePriorNet, operator: Operator, samples: int = 8, steps: int = 10,
                 per_round: int = 1, max_batch: int = 256):
        super().__init__(operator.n_locations)
        if samples < 2:
            raise ConfigError(f"ads.samples must be >= 2 (disagreement needs several samples), got {samples}")
        if steps < 1 or per_round < 1 or max_batch < 1:
            raise ConfigError("ads.steps, ads.per_round and ads.max_batch must be >= 1")
        self.prior, self.operator = prior.eval(), operator
        self.samples, self.steps, self.per_round, self.max_batch = int(samples), int(steps), int(per_round), max_batch
        self.rounds_run = 0

    def _velocity(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.prior(z[i:i + self.max_batch], t[i:i + self.max_batch])
                          for i in range(0, z.shape[0], self.max_batch)])

    @torch.no_grad()
    def posterior(self, zero_filled: torch.Tensor, mask: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, samples, C, H, W) images consistent with the measurements ``zero_filled`` = A_mᴴ y."""
        op, p = self.operator, self.samples
        b = zero_filled.shape[0]
        zf = zero_filled.repeat_interleave(p, 0)
        m = mask.repeat_interleave(p, 0)

        def consistent(x):
            return x - op.adjoint(op.measure(x, m), m) + zf

        z = randn_rows(b, p, *zf.shape[1:], generator=generator, device=zf.device).reshape(zf.shape)
        for i in range(self.steps):
            t0, t1 = i / self.steps, (i + 1) / self.steps
            v = self._velocity(z, torch.full((z.shape[0],), t0, dtype=z.dtype, device=z.device))
            z0_hat, z1_hat = z - t0 * v, z + (1 - t0) * v
            z1_hat = self.prior.to_z(consistent(self.prior.to_x(z1_hat)))
            z = (1 - t1) * z0_hat + t1 * z1_hat
        return self.prior.to_x(z).reshape(b, p, *zf.shape[1:])

    def disagreement(self, samples: torch.Tensor) -> torch.Tensor:
        """(B, N): variance across samples of the fully-sampled measurement, summed per location."""
        b, p = samples.shape[:2]
        flat = samples.flatten(0, 1)
        full = torch.ones(flat.shape[0], self.n_locations, dtype=torch.bool, device=flat.device)
        meas = self.operator.measure(flat, full)
        var = meas.reshape(b, p, *meas.shape[1:]).var(dim=1, unbiased=False)
        return location_sums(self.operator, var)

    @torch.no_grad()
    def acquire(self, taken: torch.Tensor, count: int, observe, generator) -> torch.Tensor:
        """One round: ``count`` new locations of maximum posterior disagreement (bool (B, N))."""
        d = self.disagreement(self.posterior(observe(taken), taken, generator))
        self.rounds_run += 1
        return select_topk(d, count, taken)

    def _new_locations(self, condition, budget, acquired, generator, observe=None):
        return self._run([budget], acquired, generator, observe)[budget] & ~acquired

    def propose_many(self, condition, budgets, acquired=None, generator=None, observe=None):
        """Nested masks: one sequential run to the largest budget, a snapshot at each budget."""
        acquired = self._check(condition, max(budgets), acquired)
        return self._run(list(budgets), acquired, generator, self._need(observe))

    def _run(self, budgets, acquired, generator, observe) -> dict[int, torch.Tensor]:
        taken, done = acquired.clone(), 0
        out = {0: taken.clone()} if 0 in budgets else {}
        for c in round_sizes([b for b in budgets if b > 0], self.per_round):
            taken = taken | self.acquire(taken, c, observe, generator)
            done += c
            if done in budgets:
                out[done] = taken.clone()
        return {b: out[b] for b in budgets}
