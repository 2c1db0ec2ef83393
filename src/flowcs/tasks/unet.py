"""Reconstruction U-Net (paper App. C, Table 3); its encoder doubles as the frozen condition encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers import conv_block, crop_padding, pad_to_multiple


class ReconUNet(nn.Module):
    """U-Net 1→32→64→128, bottleneck 256, three decoder levels with skips.

    The input is the zero-filled measurement concatenated with the mask map
    (``in_channels = image channels + 1``): the mask channel tells the network
    which zeros were measured and which were not sampled.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128),
        bottleneck: int = 256,
    ):
        super().__init__()
        self.widths = tuple(widths)
        self.bottleneck_channels = bottleneck
        chans = [in_channels, *self.widths]
        self.enc = nn.ModuleList(conv_block(a, b) for a, b in zip(chans[:-1], chans[1:]))
        self.pool = nn.MaxPool2d(2)
        self.mid = conv_block(self.widths[-1], bottleneck)
        ups = [bottleneck, *reversed(self.widths)]
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in zip(ups[:-1], ups[1:]))
        self.dec = nn.ModuleList(conv_block(2 * w, w) for w in reversed(self.widths))
        self.out = nn.Conv2d(self.widths[0], out_channels, 1)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of the feature maps returned by :meth:`encode`, finest first."""
        return [*self.widths, self.bottleneck_channels]

    def _encode_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        h = x
        for i, block in enumerate(self.enc):
            h = block(h if i == 0 else self.pool(h))
            feats.append(h)
        feats.append(self.mid(self.pool(h)))
        return feats

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features [level1, level2, level3, bottleneck] of the (padded) input."""
        x, _ = pad_to_multiple(x, 2 ** len(self.widths))
        return self._encode_padded(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pads = pad_to_multiple(x, 2 ** len(self.widths))
        feats = self._encode_padded(x)
        h = feats[-1]
        for up, dec, skip in zip(self.up, self.dec, reversed(feats[:-1])):
            h = dec(torch.cat([up(h), skip], dim=1))
        return crop_padding(self.out(h), pads)


def network_input(zero_filled: torch.Tensor, mask_image: torch.Tensor) -> torch.Tensor:
    """The U-Net input: zero-filled image channels + one mask channel."""
    return torch.cat([zero_filled, mask_image.to(zero_filled.dtype).expand(-1, 1, -1, -1)], dim=1)
