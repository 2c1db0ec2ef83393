"""Line masks on the acquisition's own phase-encode grid, from masks chosen on the model's grid.

The MRI models work on ``size × size`` images, cropped (or zero-padded) **in image space** from the
acquisition's ``rows × cols``. Cropping keeps the pixel size and shrinks the field of view, so both grids
span the same k-space extent and only the line spacing differs: model column ``j`` and native column ``c``
sit at the same spatial frequency when

    j = size // 2 + (c − cols // 2) · size / cols.

A scanner plays out native columns, so the mask has to be defined there, with the budget and the
low-frequency band counted on the native grid. The rule (exact, deterministic, tested):

1. the LF band is the ``round(lf_fraction · cols)`` central native columns (fastMRI placement, contiguous);
2. every other native column ``c`` is *covered* by model column ``round(j(c))`` (half up);
3. native columns are taken in the order: covered by a chosen model column first, then the most central
   (``|c − cols // 2|``, ties to the lower index) — until exactly ``total`` columns are taken.

So the native mask has exactly ``total`` lines (LF band included), keeps the model's choice of frequencies
where the budget allows, and fills or trims by centrality where the two grids' rounding disagrees.
With ``cols == size`` it is the model's mask itself (when the LF bands agree).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .kspace import low_frequency_band

__all__ = ["model_columns", "native_budget", "to_native"]


def model_columns(cols: int, size: int) -> torch.Tensor:
    """(cols,) long: the model column that covers each native column (rule step 2)."""
    c = torch.arange(cols, dtype=torch.float64)
    j = torch.floor(size // 2 + (c - cols // 2) * size / cols + 0.5).long()
    return j.clamp(0, size - 1)


def native_budget(cols: int, acceleration: float, lf_fraction: float) -> tuple[int, torch.Tensor]:
    """``(total, lf)``: lines per native mask, ``round(cols / acceleration)``, and the native LF band (bool (cols,))."""
    if acceleration < 1:
        raise ConfigError(f"acceleration {acceleration!r} must be >= 1")
    total = int(math.floor(cols / acceleration + 0.5))  # float64, as the model grid's budget (mri.config)
    lf = low_frequency_band(cols, lf_fraction)
    if total < int(lf.sum()):
        raise ConfigError(f"acceleration {acceleration:g} leaves {total} of {cols} lines, fewer than the "
                          f"{int(lf.sum())}-line low-frequency band")
    return total, lf


def to_native(model_masks: torch.Tensor, cols: int, total: int, lf: torch.Tensor) -> torch.Tensor:
    """(B, size) bool masks on the model grid → (B, cols) bool masks with exactly ``total`` lines (module rule)."""
    if model_masks.ndim != 2:
        raise ConfigError(f"model masks must be (B, size), got shape {tuple(model_masks.shape)}")
    if lf.shape != (cols,):
        raise ConfigError(f"the LF band has {lf.numel()} columns, the native grid {cols}")
    n_lf = int(lf.sum())
    if not n_lf <= total <= cols:
        raise ConfigError(f"{total} lines do not fit a {cols}-column grid with a {n_lf}-line LF band")
    size = model_masks.shape[1]
    lf = lf.to(model_masks.device)
    covered = model_masks.bool()[:, model_columns(cols, size).to(model_masks.device)]  # (B, cols)
    c = torch.arange(cols, device=model_masks.device)
    centrality = (c - cols // 2).abs()
    # one sortable key per column: LF first, then covered, then centrality, then index
    key = (~covered).long() * (2 * cols * cols) + centrality * cols + c
    key = key.masked_fill(lf, -1)
    order = key.argsort(dim=1)
    out = torch.zeros_like(covered)
    out.scatter_(1, order[:, :total], True)
    return out
