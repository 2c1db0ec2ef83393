"""Figures shared by every experiment: metric vs budget, sampling-density maps, mask grids.

All figures are written atomically (PNG rendered to a temp file, then renamed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..io import save_with  # noqa: E402
from .tables import spread  # noqa: E402


def save_figure(fig, path: Path) -> None:
    save_with(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _error_bar(mean: float, sp: tuple, scale: float) -> tuple[float, float]:
    """(below, above) the mean: ± the std, or the bootstrap 95 % interval where there is one seed."""
    if not sp:
        return 0.0, 0.0
    if sp[0] == "std":
        return sp[1] * scale, sp[1] * scale
    return mean - sp[1] * scale, sp[2] * scale - mean


def plot_metric_vs_budget(payload: dict, path: Path, scale: float = 1.0, ylabel: str | None = None,
                          xlabel: str | None = None) -> None:
    """One line per policy; error bars: ±std across seeds, or the bootstrap 95 % interval with one seed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    budgets = payload["budgets"]
    for name, row in payload["policies"].items():
        mean = [m * scale for m in row["mean"]]
        bars = [_error_bar(m, spread(row, j), scale) for j, m in enumerate(mean)]
        err = [[lo for lo, _ in bars], [hi for _, hi in bars]]
        style = "--" if name in ("full", "zero-filled") else "-o"
        ax.errorbar(budgets, mean, yerr=err, fmt=style, capsize=3, label=name, markersize=4)
    ax.set_xlabel(xlabel or f"budget ({payload['budget_unit']})")
    ax.set_ylabel(ylabel or payload["metric"])
    ax.set_title(payload["experiment"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_density(maps: dict[str, torch.Tensor], path: Path, title: str = "") -> None:
    """Average sampling density per location, one panel per budget."""
    fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps), 2.8), squeeze=False)
    for ax, (label, m) in zip(axes[0], maps.items()):
        im = ax.imshow(m.numpy(), cmap="magma", vmin=0, vmax=max(float(m.max()), 1e-6))
        ax.set_title(label, fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_mask_grid(images: torch.Tensor, acquired: torch.Tensor, masks: torch.Tensor, path: Path,
                   title: str = "", recon: torch.Tensor | None = None) -> None:
    """Rows: image / first-measurement pixels (blue) + policy pixels (red) / measured image [/ reconstruction]."""
    rows = 4 if recon is not None else 3
    n = images.shape[0]
    fig, axes = plt.subplots(rows, n, figsize=(1.4 * n, 1.5 * rows), squeeze=False)
    for i in range(n):
        img = images[i]
        rgb = _to_rgb(img)
        overlay = 0.35 * rgb
        new = masks[i] & ~acquired[i]
        overlay[acquired[i]] = torch.tensor([0.2, 0.5, 1.0])
        overlay[new] = torch.tensor([1.0, 0.2, 0.2])
        measured = rgb * masks[i][..., None].float()
        panels = [rgb, overlay, measured] + ([_to_rgb(recon[i])] if recon is not None else [])
        for r, p in enumerate(panels):
            axes[r][i].imshow(p.clamp(0, 1).numpy(), interpolation="nearest")
            axes[r][i].axis("off")
    labels = ["image", "mask (blue: first, red: policy)", "measured"]
    labels += ["reconstruction"] if recon is not None else []
    for r, lab in enumerate(labels):
        axes[r][0].set_title(lab, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def _to_rgb(img: torch.Tensor) -> torch.Tensor:
    """(H, W) or (C, H, W) in [0, 1] → (H, W, 3)."""
    img = img.detach().float().cpu()
    if img.ndim == 2:
        return img[..., None].repeat(1, 1, 3)
    if img.shape[0] == 1:
        return img[0][..., None].repeat(1, 1, 3)
    return img.permute(1, 2, 0)
