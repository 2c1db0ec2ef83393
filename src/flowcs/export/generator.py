"""The serving form of a trained MRI flow policy: one ``nn.Module`` from low-frequency k-space to the mask.

    LF k-space (B, 2, H, W) ──▶ zero-filled LF image by two real DFT matrix products (only the LF columns are
    read) ──▶ |·| ──▶ average pool (the run's ``encoder.pool``) ──▶ frozen CNN encoder (BatchNorm folded into the
    convolutions, decoder dropped) ──▶ global average pools ──▶ ``steps`` Euler steps of the velocity MLP from
    the noise x0 ──▶ mean over the ``samples`` draws (+ the run's score prior) ──▶ top-k of the non-LF columns ∪ LF.

Written with plain tensor ops only (no complex numbers, no data-dependent control flow), so that the same module
is captured by ``torch.export`` and by the ONNX exporter, and runs in ONNX Runtime. Numerically it equals the
training code's :class:`~flowcs.flow.policy.FlowPolicy` up to float32 rounding (the DFT as matrix products,
BatchNorm folding and the split first layer reorder sums): scores agree to ~1e-5, masks wherever the k-th and
(k+1)-th scores are not within that of each other.

Speed-ups against the training code: inference mode, no per-call validation; the velocity MLP's first layer is
split, so the condition's part ``W_c·c + b`` is computed once per mask and the time embedding's part
``W_t·emb(t_i)`` once at export time for every step — each Euler step multiplies only the N scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskGenerator", "build_generator", "centred_idft"]


def centred_idft(n: int) -> torch.Tensor:
    """(n, n) complex matrix A with ``ifftshift → ifft(norm="ortho") → fftshift`` of a vector v equal to A @ v."""
    eye = torch.eye(n, dtype=torch.complex128)
    return torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(eye, dim=0), dim=0, norm="ortho"), dim=0)


def _fuse(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    return fuse_conv_bn_eval(conv.eval(), bn.eval())


class _Layer(nn.Module):
    """Linear → LayerNorm → SiLU (one hidden layer of the velocity MLP)."""

    def __init__(self, linear: nn.Linear, norm: nn.LayerNorm):
        super().__init__()
        self.linear, self.norm = linear, norm

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.linear(h)))


class MaskGenerator(nn.Module):
    """``forward(kspace, noise) -> (mask, scores)`` of a trained MRI flow policy.

    ``kspace`` (B, 2, H, W): real / imaginary parts of the centred k-space (only the LF columns are read);
    ``noise`` (B, samples, N): the flow's start x0 (``torch.randn((B, samples, N), generator=…)`` reproduces
    the training code with the same generator). Returns the bool (B, N) mask (LF band + the k chosen columns)
    and the (B, N) scores it was chosen from.
    """

    def __init__(self, convs: list[nn.Conv2d], pads: tuple[int, int, int, int], pool: int, lf: torch.Tensor, k: int,
                 steps: int, samples: int, first: nn.Linear, time_table: torch.Tensor, hidden: list[nn.Linear],
                 norms: list[nn.LayerNorm], out: nn.Linear, feature_dim: int, prior: torch.Tensor | None,
                 height: int):
        super().__init__()
        n = lf.numel()
        self.n, self.k, self.steps, self.samples, self.pool = n, int(k), int(steps), int(samples), int(pool)
        self.dt = 1.0 / self.steps
        self.pads = tuple(int(p) for p in pads)
        self.convs = nn.ModuleList(convs)
        lf_idx = lf.nonzero().flatten()
        rows = centred_idft(height)
        cols = centred_idft(n).T[lf_idx]  # (n_lf, W): the inverse DFT of the LF columns only
        self.register_buffer("lf_idx", lf_idx.clone())
        self.register_buffer("lf_mask", lf.bool().reshape(1, -1).clone())
        self.register_buffer("rows_re", rows.real.float().contiguous())
        self.register_buffer("rows_im", rows.imag.float().contiguous())
        self.register_buffer("cols_re", cols.real.float().contiguous())
        self.register_buffer("cols_im", cols.imag.float().contiguous())
        w = first.weight.detach()
        self.register_buffer("w_x", w[:, :n].clone())
        self.register_buffer("w_c", w[:, n:n + feature_dim].clone())
        self.register_buffer("b_first", first.bias.detach().clone())
        self.register_buffer("t_proj", F.linear(time_table, w[:, n + feature_dim:]).clone())
        self.register_buffer("prior", (torch.zeros(n) if prior is None else prior.float()).reshape(1, -1).clone())
        self.first_norm = norms[0]
        self.layers = nn.ModuleList(_Layer(lin, norm) for lin, norm in zip(hidden, norms[1:]))
        self.out = out

    def condition(self, kspace: torch.Tensor) -> torch.Tensor:
        """(B, 1, H/pool, W/pool) pooled magnitude of the zero-filled LF reconstruction (the flow's condition)."""
        kr = kspace[:, 0].index_select(2, self.lf_idx)  # (B, H, n_lf)
        ki = kspace[:, 1].index_select(2, self.lf_idx)
        tr = self.rows_re @ kr - self.rows_im @ ki  # rows: (H, H) @ (B, H, n_lf)
        ti = self.rows_re @ ki + self.rows_im @ kr
        zr = tr @ self.cols_re - ti @ self.cols_im  # columns: (B, H, n_lf) @ (n_lf, W)
        zi = tr @ self.cols_im + ti @ self.cols_re
        mag = (zr * zr + zi * zi).sqrt().unsqueeze(1)
        if self.pool > 1:
            mag = F.avg_pool2d(mag, self.pool, ceil_mode=True)
        return mag

    def features(self, cond: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features (B, Σ C_i): two fused conv + LeakyReLU per level, max-pool between levels."""
        h = F.pad(cond, self.pads)
        pooled = []
        for i, conv in enumerate(self.convs):
            if i % 2 == 0 and i > 0:
                h = F.max_pool2d(h, 2)
            h = F.leaky_relu(conv(h), 0.2)
            if i % 2 == 1:
                pooled.append(h.mean(dim=(-2, -1)))
        return torch.cat(pooled, dim=1)

    def integrate(self, c: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Euler integration of the velocity MLP from ``noise`` (B, samples, N); returns the mean scores (B, N)."""
        b = noise.shape[0]
        x = noise.reshape(b * self.samples, self.n)
        base = F.linear(c, self.w_c, self.b_first).repeat_interleave(self.samples, dim=0)
        for i in range(self.steps):
            h = F.silu(self.first_norm(F.linear(x, self.w_x) + base + self.t_proj[i]))
            for layer in self.layers:
                h = layer(h)
            x = x + self.dt * self.out(h)
        return x.reshape(b, self.samples, self.n).mean(dim=1) + self.prior

    def topk(self, scores: torch.Tensor) -> torch.Tensor:
        """LF band ∪ the k best non-LF columns."""
        masked = scores.masked_fill(self.lf_mask, -math.inf)
        idx = torch.topk(masked, self.k, dim=1).indices
        chosen = torch.zeros_like(masked).scatter(1, idx, 1.0) > 0.5
        return chosen | self.lf_mask

    def forward(self, kspace: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.integrate(self.features(self.condition(kspace)), noise)
        return self.topk(scores), scores


def _copy_linear(m: nn.Linear) -> nn.Linear:
    new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    new.load_state_dict(m.state_dict())
    return new


def _copy_norm(m: nn.LayerNorm) -> nn.LayerNorm:
    new = nn.LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine)
    new.load_state_dict(m.state_dict())
    return new


def build_generator(policy, lf: torch.Tensor, k: int, size: int, pool: int = 1, steps: int | None = None,
                    samples: int | None = None) -> MaskGenerator:
    """A :class:`MaskGenerator` from a trained one-shot MRI :class:`~flowcs.flow.policy.FlowPolicy`."""
    from ..errors import ConfigError
    from ..flow.nets.mlp import MRIVelocityMLP
    from ..layers import pad_to_multiple
    from ..tasks.unet import ReconUNet

    model = policy.model
    unet, vel = model.encoder.net, model.velocity
    if not isinstance(unet, ReconUNet) or getattr(model.encoder, "method", None) != "encode":
        raise ConfigError("export needs an MRI flow policy whose encoder is a ReconUNet (method 'encode')")
    if not isinstance(vel, MRIVelocityMLP) or getattr(model, "acquired_input", False):
        raise ConfigError("export needs a one-shot MRI flow policy (MRIVelocityMLP without the acquired-mask input)")
    if getattr(policy, "rounds", 1) != 1:
        raise ConfigError(f"export serves one-shot policies; this one acquires in {policy.rounds} rounds")
    steps = int(policy.steps if steps is None else steps)
    samples = int(policy.samples if samples is None else samples)
    convs = []
    for block in [*unet.enc, unet.mid]:
        convs += [_fuse(block[0], block[1]), _fuse(block[3], block[4])]
    side = -(-size // pool)  # ceil: avg_pool2d(ceil_mode=True)
    _, pads = pad_to_multiple(torch.zeros(1, 1, side, side), 2 ** len(unet.widths))
    with torch.no_grad():
        table = torch.cat([vel.time(torch.full((1,), i / steps, dtype=torch.float32)) for i in range(steps)])
    linears = [m for m in vel.body if isinstance(m, nn.Linear)]
    norms = [m for m in vel.body if isinstance(m, nn.LayerNorm)]
    gen = MaskGenerator(convs, pads, pool, lf, k, steps, samples, linears[0], table,
                        [_copy_linear(m) for m in linears[1:]], [_copy_norm(m) for m in norms], _copy_linear(vel.out),
                        vel.feature_dim, getattr(policy, "prior", None), size)
    return gen.eval().requires_grad_(False)
