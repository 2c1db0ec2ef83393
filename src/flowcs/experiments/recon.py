"""Pixel reconstruction experiments (paper §2.6.2 / §3.2): one class, registered as ``mnist-recon`` and
``faces-recon`` (:mod:`flowcs.experiments.mnist_recon`, :mod:`flowcs.experiments.faces_recon` add the data).

The task is the reconstruction U-Net trained on randomly masked noisy images (L1); it is frozen while the flow
trains and serves twice: its encoder reads the random first measurement (``random-first`` conditioning) and
the whole net reconstructs from the final mask.

Stages (each resumable, each writes ``<run_dir>/<stage>.pt``):
  unet  reconstruction U-Net on random masks (the task model and the condition encoder)
  flow  the flow policy, trained against the frozen U-Net (L1 through the sigmoid gate + flow matching)
Then ``evaluate``: the primary metric (MAE or PSNR) and the other two per budget for flow / random /
random-same-total (/ full).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..acquisition import RandomFirst, UNetInput
from ..errors import ConfigError
from ..evaluation import figures
from ..evaluation.loop import evaluate
from ..evaluation.setup import Setup, Split, TrainData
from ..evaluation.tables import markdown_table, metrics_payload, write_results
from ..flow.objective import check_flow_settings, objective_signature
from ..masks import check_rate
from ..metrics import mae, psnr, ssim
from ..operators.pixel import PixelOperator
from ..tasks.base import ReconstructionTask
from ..tasks.unet import ReconUNet
from ..training.stages import fit_stage, load_stage, tensor_batches
from .ablation import run_flow_ablation
from .context import RunContext
from .pixel import (
    DensityRecord,
    MaskedTaskObjective,
    PixelExperiment,
    budgets_to_pixels,
    build_flow_model,
    build_flow_objective,
    check_first_samples,
    check_rate_range,
    check_split,
    flow_batch_fn,
    flow_net_signature,
    load_flow_policy,
)

__all__ = ["TaskConfig", "DataConsistentTask", "ReconExperiment", "recon_metrics", "make_recon_unet",
           "results_markdown", "METRIC_INFO"]

METRIC_INFO = {"mae": (False, "MAE (pixel range [0, 1])"), "psnr": (True, "PSNR (dB)"), "ssim": (True, "SSIM")}


@dataclass
class TaskConfig:
    # Keep the measured pixels: prediction = zero-filled + (1 - m^2) * U-Net (see DataConsistentTask).
    data_consistency: bool = False


class DataConsistentTask(ReconstructionTask):
    """Reconstruction that keeps what was measured: ``zero_filled + (1 - m²) ⊙ U(zero_filled, m)``.

    For a hard mask the measured pixels are returned exactly and the U-Net only fills the others. For a soft
    mask the pixel operator's zero-filled image is ``m² ⊙ x``, so the prediction is the convex blend
    ``m² x + (1 - m²) U`` — its derivative in ``m`` rewards measuring where the U-Net's guess is wrong, which
    gives the flow an informative task gradient through the sigmoid gate.
    """

    def predict(self, zero_filled, mask_image):
        out = super().predict(zero_filled, mask_image)
        w = mask_image.to(out.dtype) ** 2
        return zero_filled + (1.0 - w) * out


def make_recon_unet(cfg, channels: int) -> ReconUNet:
    return ReconUNet(channels + 1, channels, cfg.widths, cfg.bottleneck)


def recon_metrics() -> dict:
    """Per-image metrics on predictions clamped to the pixel range [0, 1] (data range 1)."""
    return {
        "mae": lambda pred, y: mae(pred.clamp(0, 1), y),
        "psnr": lambda pred, y: psnr(pred.clamp(0, 1), y, data_range=1.0),
        "ssim": lambda pred, y: ssim(pred.clamp(0, 1), y, data_range=1.0),
    }


def _per_sample(fn):
    """``fn(pred, y)`` as a setup metric ``fn(pred, y, rows)``."""
    return lambda pred, y, rows: fn(pred, y)


def _budget_label(value: float, unit: str) -> str:
    return f"{value:g} px" if unit == "pixels" else f"{value:.4g}%"


class ReconExperiment(PixelExperiment):
    """Shared stages, setup, rows and figures of the reconstruction experiments; subclasses give the data."""

    stages = ("unet", "flow")
    channels: int = 1
    primary: str = "mae"

    # --- what subclasses provide

    def image_size(self, cfg) -> int:
        return cfg.data.image_size

    def load_split(self, ctx: RunContext, split: str) -> tuple[torch.Tensor, str, list[str] | None]:
        """(images (B, C, S, S) in [0, 1], source description, per-image names or None) of ``split``."""
        raise NotImplementedError

    def protocol(self, ctx: RunContext, test: Split) -> str:
        raise NotImplementedError

    def subsets(self, ctx: RunContext, test: Split) -> dict[str, torch.Tensor]:
        """Test-image subsets reported separately (e.g. the fixed 100 faces)."""
        return {}

    # --- configuration

    def operator(self, cfg) -> PixelOperator:
        s = self.image_size(cfg)
        return PixelOperator(self.channels, s, s)

    def validate(self, cfg) -> None:
        """Checks common to the reconstruction configs."""
        n_locations = self.image_size(cfg) ** 2
        e = cfg.eval
        if e.full and cfg.task.data_consistency:
            raise ConfigError("eval.full has no meaning with task.data_consistency: the fully sampled image is "
                              "returned exactly (set eval.full=false)")
        budgets = budgets_to_pixels(e.budgets, e.budget_unit, n_locations, "evaluation budget")
        grid = budgets_to_pixels(e.grid_budgets, e.budget_unit, n_locations, "figure budget")
        missing = [v for v, b in zip(e.grid_budgets, grid) if b not in budgets]
        if missing:
            raise ConfigError(f"eval.grid_budgets {missing} must be among eval.budgets {list(e.budgets)}")
        check_rate_range(cfg.unet.rate_min, cfg.unet.rate_max, "unet")
        check_rate_range(cfg.flow.rate_min, cfg.flow.rate_max, "flow")
        check_first_samples(cfg.flow.first_samples, max(budgets), n_locations)
        if e.seeds < 1:
            raise ConfigError("eval.seeds must be at least 1")
        if e.grid_images < 1:
            raise ConfigError("eval.grid_images must be at least 1")
        check_split(e.split)
        check_flow_settings(cfg.flow)
        for r in cfg.ablation.rates:
            check_rate(r, "ablation rate")
        cfg.compare.validate()

    def signature(self, ctx: RunContext, stage: str, flow_cfg=None) -> dict:
        """What shapes a stage's network *and* the data it was trained for (a 64x64 model refuses 128x128 data)."""
        cfg = ctx.cfg
        sig = {"experiment": self.name, "image_size": self.image_size(cfg), "channels": self.channels,
               "unet_widths": list(cfg.unet.widths), "unet_bottleneck": cfg.unet.bottleneck}
        if cfg.task.data_consistency:  # only when on, so checkpoints from before the option still load
            sig["data_consistency"] = True
        if stage != "unet":
            f = flow_cfg or cfg.flow
            sig.update(**flow_net_signature(f.net), **objective_signature(f))
        return sig

    # --- models

    def make_task(self, unet: ReconUNet, cfg) -> ReconstructionTask:
        return (DataConsistentTask if cfg.task.data_consistency else ReconstructionTask)(unet)

    def trained_unet(self, ctx: RunContext) -> ReconUNet:
        return load_stage(ctx, "unet", make_recon_unet(ctx.cfg.unet, self.channels), self.signature(ctx, "unet"))

    def flow_policy(self, ctx: RunContext, flow_cfg=None, stage: str = "flow"):
        return load_flow_policy(ctx, stage, self.trained_unet(ctx), self.operator(ctx.cfg), flow_cfg or ctx.cfg.flow,
                                self.signature(ctx, stage, flow_cfg))

    # --- training

    def training_sample(self, ctx: RunContext, n: int):
        x = self.load_split(ctx, "train")[0][:n]
        return x, x

    def training_data(self, ctx: RunContext) -> torch.Tensor:
        x, source, _ = self.load_split(ctx, "train")
        ctx.record_data_sources({"train": source})
        return x

    def train_stage(self, ctx: RunContext, stage: str, x: torch.Tensor) -> None:
        c = ctx.cfg
        operator = self.operator(c)
        if stage == "unet":
            task = self.make_task(make_recon_unet(c.unet, self.channels), c)
            obj = MaskedTaskObjective(task, operator, c.unet.rate_min, c.unet.rate_max, c.unet.noise_std)
            fit_stage(ctx, stage, obj.to(ctx.device), c.unet.loop, tensor_batches(x, x, ctx.device), x.shape[0],
                      self.signature(ctx, "unet"))
        elif stage == "flow":
            self.train_flow(ctx, c.flow, x)

    def train_flow(self, ctx: RunContext, flow_cfg, x: torch.Tensor, stage: str = "flow") -> None:
        """Train a flow with ``flow_cfg`` as stage ``stage`` (the main flow, or an ablation variant)."""
        c = ctx.cfg
        operator = self.operator(c)
        unet = self.trained_unet(ctx)
        task = self.make_task(unet, c).freeze()
        model = build_flow_model(unet, operator, flow_cfg.net)
        obj = build_flow_objective(model, task, operator, flow_cfg).to(ctx.device)
        fit_stage(ctx, stage, obj, flow_cfg.loop, flow_batch_fn(x, x, operator, flow_cfg, ctx.device), x.shape[0],
                  self.signature(ctx, stage, flow_cfg))

    def ablate(self, ctx: RunContext) -> dict:
        """Target × loss (× rounds) on the validation images, from the run's frozen U-Net (:mod:`..ablation`)."""
        x = self.load_split(ctx, "train")[0]
        return run_flow_ablation(self, ctx, lambda flow_cfg, stage: self.train_flow(ctx, flow_cfg, x, stage))

    # --- evaluation

    def setup(self, ctx: RunContext, split: str | None = None, train: bool = False) -> Setup:
        c = ctx.cfg
        op = self.operator(c)
        task = self.make_task(self.trained_unet(ctx), c).freeze()  # a mismatched checkpoint fails before data loads
        split = split or c.eval.split
        x, source, names = self.load_split(ctx, split)
        train_data = None
        if train:
            xtr, train_source, _ = self.load_split(ctx, "train")
            train_data = TrainData.from_tensors(xtr, xtr, ctx.device, train_source)
        metrics = {name: _per_sample(fn) for name, fn in recon_metrics().items()}
        k0 = c.flow.first_samples
        test = Split(x.to(ctx.device), x.to(ctx.device), names=names, source=source, split=split)
        dc = c.task.data_consistency
        return Setup(
            experiment=self.name, operator=op, task=task, first=RandomFirst(k0), condition=UNetInput(), test=test,
            budgets=budgets_to_pixels(c.eval.budgets, c.eval.budget_unit, op.n_locations),
            budget_values=[int(v) if c.eval.budget_unit == "pixels" else v for v in c.eval.budgets],
            budget_unit=c.eval.budget_unit, metrics=metrics, primary=self.primary,
            higher_is_better=METRIC_INFO[self.primary][0], train=train_data, task_files=[ctx.checkpoint("unet")],
            flow_rates=(c.flow.rate_min, c.flow.rate_max),
            protocol=(f"{self.name}: frozen reconstruction U-Net (stage 'unet'"
                      f"{', measured pixels kept (task.data_consistency)' if dc else ''}), pixel values in [0, 1]"))

    def evaluate(self, ctx: RunContext) -> dict:
        """flow / random / random-same-total (/ full) on the test images; metrics.json and figures."""
        c = ctx.cfg
        setup = self.setup(ctx)
        x, budgets, primary = setup.test.x, setup.budgets, self.primary
        channels, h, w = setup.operator.image_shape
        entries = self.entries(ctx, setup)
        record = DensityRecord(budgets, setup.operator.n_locations, n_grid=c.eval.grid_images)
        refs = {"full": setup.task.predict} if c.eval.full else None
        res = evaluate(setup, entries, self.draws(ctx), c.eval.seeds, c.eval.batch_size, ctx.device,
                       references=refs, on_masks=record)
        record.reduce()
        subsets = self.subsets(ctx, setup.test)

        def rows_for(metric: str, idx: torch.Tensor | None = None) -> dict:
            rows = {name: res.seed_row(metric, name, budgets, idx) for name in entries}
            if c.eval.full:
                v = res.values[metric]["full"][budgets[0]][0]
                v = v if idx is None else v[idx]
                rows["full"] = {"mean": [float(v.mean())] * len(budgets), "std_seeds": [0.0] * len(budgets),
                                "n": int(v.numel()),
                                "note": "the same frozen U-Net given every pixel (its own error floor; the "
                                        "fully sampled measurement itself is exact)"}
            return rows

        others = [m for m in setup.metrics if m != primary]
        rows = rows_for(primary)
        hib = setup.higher_is_better
        margins = {f"flow_vs_{ref}": [(f - r) if hib else (r - f) for f, r in zip(rows["flow"]["mean"],
                                                                                    rows[ref]["mean"])]
                   for ref in ("random", "random-same-total")}
        k0 = c.flow.first_samples
        source = {setup.test.split: setup.test.source, **ctx.recorded_data_sources()}
        payload = metrics_payload(
            self.name, primary, hib, setup.budget_unit, setup.budget_values, rows,
            extra_metrics={m: rows_for(m) for m in others},
            budget_pixels=budgets, first_samples=k0, total_pixels=[b + k0 for b in budgets],
            margins=margins, data_consistency=c.task.data_consistency,
            seeds=c.eval.seeds, test_images=int(x.shape[0]), split=setup.test.split, selected_on="val",
            image_shape=[channels, h, w], adaptivity=record.adaptivity_report(budgets),
            data={**source, "protocol": self.protocol(ctx, setup.test)},
            **({"subsets": {name: {"indices": idx.tolist(), "metric": primary, "policies": rows_for(primary, idx),
                                    "extra_metrics": {m: rows_for(m, idx) for m in others}}
                            for name, idx in subsets.items()}} if subsets else {}),
            **self.extra_fields(ctx, setup.test),
            notes=("flow and random-same-total see the k0 random first-measurement pixels plus the policy budget "
                   "(total = budget + k0); random sees only the budget, as in the paper. One mask per image, shared "
                   "by all colour channels. Reconstruction U-Net trained on random masks with noise, frozen for "
                   "every policy; evaluation measurements are noiseless. margins: flow better by this much "
                   "(positive = flow wins) in the primary metric. std_seeds = across evaluation seeds, ci95 = "
                   "bootstrap 95 % interval over the per-image values."
                   + (" Data consistency: measured pixels are returned as measured, the U-Net fills the others."
                      if c.task.data_consistency else "")),
        )
        if ctx.dist.is_main:
            write_results(ctx.results_dir, "metrics", payload, ctx.metadata(data_source=source),
                          markdown=results_markdown(payload))
            self._figures(ctx, setup, payload, record, others)
        return payload

    def extra_fields(self, ctx: RunContext, test: Split) -> dict:
        return {}

    def _figures(self, ctx: RunContext, setup: Setup, payload: dict, record: DensityRecord, others: list) -> None:
        c, res, primary = ctx.cfg, ctx.results_dir, self.primary
        op, task, x = setup.operator, setup.task, setup.test.x
        channels, h, w = op.image_shape
        unit, budgets, k0 = c.eval.budget_unit, setup.budgets, c.flow.first_samples
        xlabel = f"policy budget ({'pixels' if unit == 'pixels' else '% of pixels'})"
        figures.plot_metric_vs_budget(payload, res / f"{primary}_vs_budget.png", ylabel=METRIC_INFO[primary][1],
                                      xlabel=xlabel)
        for m in others:
            sub = {**payload, "metric": m, "policies": payload["extra_metrics"][m]}
            figures.plot_metric_vs_budget(sub, res / f"{m}_vs_budget.png", ylabel=METRIC_INFO[m][1], xlabel=xlabel)
        labels = {b: _budget_label(v, unit) for v, b in zip(setup.budget_values, budgets)}
        figures.plot_density({labels[b]: d for b, d in record.density_maps(h, w).items()}, res / "density.png",
                             title="flow: probability that a pixel is chosen (first-measurement pixels excluded)")
        n_grid = record.grid_acquired.shape[0]
        grid_x = x[:n_grid]
        acq = record.grid_acquired.reshape(-1, h, w)
        for v in c.eval.grid_budgets:
            b = budgets_to_pixels([v], unit, op.n_locations)[0]
            m = record.grid_masks[b].to(ctx.device)
            with torch.inference_mode():
                recon = task.predict(op.zero_filled(op.measure(grid_x, m), m), op.mask_to_image(m)).clamp(0, 1)
            imgs = grid_x[:, 0] if channels == 1 else grid_x
            rec = recon[:, 0] if channels == 1 else recon
            figures.plot_mask_grid(imgs.cpu(), acq, m.cpu().reshape(-1, h, w), res / f"recon_{b}px.png",
                                   title=f"flow at {labels[b]} (+{k0} first pixels, blue): ground truth / mask / "
                                         f"measured / reconstruction", recon=rec.cpu())


def results_markdown(payload: dict) -> str:
    """Every metric (and every reported subset) as a mean ± std table, 4 significant digits."""
    digits = {"mae": 4, "psnr": 2, "ssim": 4}
    out = [f"# {payload['experiment']}\n", f"Data: {payload['data'].get('protocol', '')}\n",
           f"Budgets in {payload['budget_unit']} (pixels: {payload['budget_pixels']}; first measurement: "
           f"{payload['first_samples']} random pixels, total = budget + first).\n"]

    def tables(block: dict, title: str) -> None:
        for metric, rows in [(block["metric"], block["policies"]), *block.get("extra_metrics", {}).items()]:
            hib = "higher" if METRIC_INFO[metric][0] else "lower"
            out.append(f"## {title}{METRIC_INFO[metric][1]} ({hib} is better)\n")
            out.append(markdown_table({**payload, "policies": rows}, 1.0, digits[metric], metric))

    tables(payload, "")
    for name, sub in payload.get("subsets", {}).items():
        tables(sub, f"{name}: ")
    return "\n".join(out)
