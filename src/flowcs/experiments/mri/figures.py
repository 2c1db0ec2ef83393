"""Figures of the MRI experiments (written by :meth:`MRIExperiment.evaluate`)."""

from __future__ import annotations

import torch

from ...evaluation.figures import save_figure
from ...metrics import ssim
from .data import Geometry

__all__ = ["write_figures"]


def write_figures(ctx, geometry: Geometry, payload: dict, fig: dict, density: dict, flow_masks: torch.Tensor,
                  names: list[str], n_draws: int) -> None:
    """reconstructions.png (paper Fig. 5), density.png (Fig. 6b), flow_masks.png and ssim.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = ctx.results_dir
    acc = ctx.cfg.mri.acceleration
    # Fig. 5: ground truth, mask, zero-filled, MoDL reconstruction, error map for every policy
    shown = [p for p in ("random", "equispaced", "variable-density", "flow") if p in fig]
    if shown:
        f, axes = plt.subplots(len(shown), 5, figsize=(11, 2.3 * len(shown)), squeeze=False)
        for r, name in enumerate(shown):
            d = fig[name]
            vmax = float(d["target"].max())
            s_val = float(ssim(d["pred"][None].double(), d["target"][None].double())[0])
            mask_img = d["mask"].float()[None, :].expand(geometry.size, -1).clone()
            mask_img[:, geometry.lf] = 0.5
            panels = [(d["target"], "ground truth", "gray", vmax), (mask_img, f"{name} mask", "gray", 1.0),
                      (d["zf"], "zero-filled", "gray", vmax), (d["pred"], f"MoDL  SSIM {s_val:.3f}", "gray", vmax),
                      ((d["pred"] - d["target"]).abs() * 5, "|error| × 5", "inferno", vmax)]
            for ax, (img, title, cmap, vm) in zip(axes[r], panels):
                ax.imshow(img.numpy(), cmap=cmap, vmin=0, vmax=vm)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
        f.suptitle(f"{ctx.experiment}: {names[ctx.cfg.eval.figure_image]} "
                   f"({acc:g}x, LF band grey in the mask)", fontsize=9)
        save_figure(f, out / "reconstructions.png")
    # Fig. 6b: average sampling density per column (policy lines only), flow vs the baselines
    f, ax = plt.subplots(figsize=(7, 3))
    cols = torch.arange(geometry.size) - geometry.size // 2
    for name, style in (("random", ":"), ("equispaced", "--"), ("variable-density", "-."), ("flow", "-"),
                        ("low-frequency", ":")):
        if name in density:
            ax.plot(cols.numpy(), (density[name] / n_draws).numpy(), style, label=name,
                    lw=2 if name == "flow" else 1, color="0.4" if name == "low-frequency" else None)
    lf_cols = cols[geometry.lf]
    ax.axvspan(float(lf_cols.min()) - 0.5, float(lf_cols.max()) + 0.5, color="grey", alpha=0.3, label="LF band")
    ax.set_xlabel("k-space column (0 = DC)")
    ax.set_ylabel("P(column sampled)")
    ax.set_title(f"{ctx.experiment}: sampling density of the policy lines ({n_draws} masks per policy)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(f, out / "density.png")
    # the flow's mask for every test image (adaptivity at a glance)
    f, ax = plt.subplots(figsize=(7, 0.25 * len(names) + 1))
    ax.imshow(flow_masks.float().numpy(), cmap="gray_r", aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=6)
    ax.set_xlabel("k-space column")
    ax.set_title(f"{ctx.experiment}: flow masks (seed 0), one row per image", fontsize=9)
    save_figure(f, out / "flow_masks.png")
    # SSIM per policy
    f, ax = plt.subplots(figsize=(6, 3))
    names = list(payload["policies"])
    means = [payload["policies"][p]["mean"][0] for p in names]
    stds = [payload["policies"][p]["std_images"][0] for p in names]
    ax.bar(names, means, yerr=stds, capsize=3, color=["C7" if p in ("zero-filled", "full") else "C0" for p in names])
    ax.set_ylabel("SSIM")
    ax.set_ylim(max(0.0, min(means) - 0.1), 1.0)
    ax.set_title(f"{ctx.experiment} ({payload['split']} images, mean ± std over images)", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    save_figure(f, out / "ssim.png")
