"""Velocity network for pixel policies: a U-Net with two parallel encoders (paper §2.6.1).

One encoder is the *frozen* condition encoder (features of the first
measurement, computed once per condition); the other is trainable and reads
the current score map x_t. They are fused level by level with 1×1
convolutions; the flow time enters at the bottleneck.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...layers import conv_block, crop_padding, pad_to_multiple, repeat_to_batch
from .time_embedding import SinusoidalTimeEmbedding


class DualEncoderUNet(nn.Module):
    """v_θ(x_t, t, c) on an H×W grid of locations; returns one velocity per location (B, H·W)."""

    def __init__(
        self,
        height: int,
        width: int,
        cond_channels: Sequence[int],
        widths: Sequence[int] = (16, 32, 64),
        bottleneck: int = 128,
        time_dim: int = 64,
    ):
        super().__init__()
        if len(cond_channels) != len(widths) + 1:
            raise ValueError("cond_channels needs one entry per encoder level plus the bottleneck")
        self.height, self.width = height, width
        self.widths = tuple(widths)
        chans = [1, *self.widths]
        self.enc = nn.ModuleList(conv_block(a, b, norm="group") for a, b in zip(chans[:-1], chans[1:]))
        self.pool = nn.MaxPool2d(2)
        self.mid = conv_block(self.widths[-1], bottleneck, norm="group")
        out_ch = [*self.widths, bottleneck]
        self.fuse = nn.ModuleList(nn.Conv2d(o + c, o, 1) for o, c in zip(out_ch, cond_channels))
        self.time = nn.Sequential(
            SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, bottleneck), nn.SiLU(),
            nn.Linear(bottleneck, bottleneck),
        )
        ups = [bottleneck, *reversed(self.widths)]
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in zip(ups[:-1], ups[1:]))
        self.dec = nn.ModuleList(conv_block(2 * w, w, norm="group") for w in reversed(self.widths))
        self.out = nn.Conv2d(self.widths[0], 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        b = x_t.shape[0]
        x = x_t.reshape(b, 1, self.height, self.width)
        x, pads = pad_to_multiple(x, 2 ** len(self.widths))
        skips = []
        h = x
        for i, (block, fuse) in enumerate(zip(self.enc, self.fuse)):
            h = block(h if i == 0 else self.pool(h))
            h = fuse(torch.cat([h, repeat_to_batch(cond_feats[i], b)], dim=1))
            skips.append(h)
        h = self.mid(self.pool(h))
        h = self.fuse[-1](torch.cat([h, repeat_to_batch(cond_feats[-1], b)], dim=1))
        h = h + self.time(t)[:, :, None, None]
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            h = dec(torch.cat([up(h), skip], dim=1))
        return crop_padding(self.out(h), pads).reshape(b, -1)

