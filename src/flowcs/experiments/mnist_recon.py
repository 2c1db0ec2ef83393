"""MNIST compressed reconstruction (paper §2.6.2 / §3.2; SPEC §1–4), and the pieces every pixel
reconstruction experiment shares (``faces_recon`` imports them).

Digits are zero-padded from 28×28 to 32×32 (2 px per side). The task is the reconstruction U-Net trained on
randomly masked noisy digits (L1); it is frozen while the flow trains and serves twice: its encoder reads the
random first measurement (``random-first`` conditioning) and the whole net reconstructs from the final mask.

Stages (each resumable, each writes ``<run_dir>/<stage>.pt``):
  unet  reconstruction U-Net on random masks (the task model and the condition encoder)
  flow  the flow policy, trained against the frozen U-Net (L1 through the sigmoid gate + flow matching)
Then ``evaluate``: MAE (primary), PSNR and SSIM per budget for flow / random / random-same-total / full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import load_mnist, pad_images
from ..errors import ConfigError
from ..io import write_text
from ..masks import check_rate
from ..metrics import mae, psnr, ssim
from ..operators.pixel import PixelOperator
from ..policies.random import RandomPolicy
from ..tasks.base import ReconstructionTask
from ..tasks.unet import ReconUNet
from ..training.loop import LoopConfig, fit
from . import report
from .common import (
    RunContext,
    fit_stage,
    load_stage,
    markdown_table,
    metrics_payload,
    record_data_sources,
    recorded_data_sources,
    seed_row,
    write_results,
)
from .pixel import (
    FlowTrainConfig,
    MaskedTaskObjective,
    UNetConfig,
    budgets_to_pixels,
    build_flow_model,
    build_flow_objective,
    check_first_samples,
    evaluate_over_seeds,
    flow_batch_fn,
    load_flow_policy,
)

NAME = "mnist-recon"
STAGES = ("unet", "flow")
MNIST_SIZE = 28


@dataclass
class DataConfig:
    image_size: int = 32  # digits zero-padded centrally from 28x28 to image_size x image_size
    train_subset: int | None = None  # use only the first n training images
    test_subset: int | None = 2000  # evaluate on the first n test images


@dataclass
class TaskConfig:
    # Keep the measured pixels: prediction = zero-filled + (1 - m^2) * U-Net (see DataConsistentTask).
    data_consistency: bool = False


@dataclass
class EvalConfig:
    budgets: list[float] = field(default_factory=lambda: [10, 20, 50, 100, 250, 500])
    budget_unit: str = "pixels"  # or "percent" (of image_size^2)
    grid_budgets: list[float] = field(default_factory=lambda: [20, 100, 500])  # figure; must be among budgets
    grid_images: int = 8
    seeds: int = 2
    batch_size: int = 500
    full: bool = True  # also report the frozen U-Net given every pixel


def _unet_default() -> UNetConfig:
    return UNetConfig(rate_min=0.5, rate_max=55.0, noise_std=0.05, widths=[16, 32, 64], bottleneck=128,
                      loop=LoopConfig(epochs=3, batch_size=64, lr=2e-3, steps_per_epoch=400))


def _flow_default() -> FlowTrainConfig:
    # Budgets of 10-500 of the 1024 pixels (rates are percentages: 10/1024 = 0.9765625 %). Task loss alone, as
    # for classification: a 300-step pilot beat the 900-step Kendall FM + task flow at every budget
    # (MAE 0.0664 vs 0.0752 at 10 px, 0.0223 vs 0.0328 at 100 px; results/mnist-recon/README.md).
    return FlowTrainConfig(first_samples=10, rate_min=0.9765625, rate_max=48.828125, loss="task",
                           loop=LoopConfig(epochs=3, batch_size=64, lr=1e-3, steps_per_epoch=300))


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    unet: UNetConfig = field(default_factory=_unet_default)
    flow: FlowTrainConfig = field(default_factory=_flow_default)
    eval: EvalConfig = field(default_factory=EvalConfig)


SMOKE = {
    "data": {"train_subset": 2048, "test_subset": 256},
    "unet": {"widths": [8, 16, 32], "bottleneck": 32,
             "loop": {"epochs": 1, "batch_size": 32, "steps_per_epoch": 40, "log_every": 4}},
    "flow": {"net": {"widths": [8, 16, 16], "bottleneck": 32}, "steps": 4,
             "loop": {"epochs": 1, "batch_size": 32, "steps_per_epoch": 30, "log_every": 3}},
    "eval": {"seeds": 1, "batch_size": 256, "budgets": [10, 100, 500], "grid_budgets": [10, 100, 500],
             "grid_images": 4},
}


# ----------------------------------------------------------------------------- shared by the recon experiments


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


def make_task(unet: ReconUNet, cfg) -> ReconstructionTask:
    return (DataConsistentTask if cfg.task.data_consistency else ReconstructionTask)(unet)


def validate_recon(cfg, n_locations: int) -> list[int]:
    """Checks common to the reconstruction configs; returns the evaluation budgets in pixels."""
    e = cfg.eval
    if e.full and cfg.task.data_consistency:
        raise ConfigError("eval.full has no meaning with task.data_consistency: the fully sampled image is "
                          "returned exactly (set eval.full=false)")
    budgets = budgets_to_pixels(e.budgets, e.budget_unit, n_locations, "evaluation budget")
    grid = budgets_to_pixels(e.grid_budgets, e.budget_unit, n_locations, "figure budget")
    missing = [v for v, b in zip(e.grid_budgets, grid) if b not in budgets]
    if missing:
        raise ConfigError(f"eval.grid_budgets {missing} must be among eval.budgets {list(e.budgets)}")
    for lo, hi, what in [(cfg.unet.rate_min, cfg.unet.rate_max, "unet"),
                         (cfg.flow.rate_min, cfg.flow.rate_max, "flow")]:
        check_rate(lo, f"{what}.rate_min")
        check_rate(hi, f"{what}.rate_max")
        if lo > hi:
            raise ConfigError(f"{what}.rate_min {lo} exceeds {what}.rate_max {hi}")
    check_first_samples(cfg.flow.first_samples, max(budgets), n_locations)
    if e.seeds < 1:
        raise ConfigError("eval.seeds must be at least 1")
    if e.grid_images < 1:
        raise ConfigError("eval.grid_images must be at least 1")
    return budgets


def recon_signature(experiment: str, stage: str, cfg, channels: int, image_size: int) -> dict:
    """What shapes a stage's network *and* the data it was trained for (a 64x64 model refuses 128x128 data)."""
    sig = {"experiment": experiment, "image_size": image_size, "channels": channels,
           "unet_widths": list(cfg.unet.widths), "unet_bottleneck": cfg.unet.bottleneck}
    if cfg.task.data_consistency:  # only when on, so checkpoints from before the option still load
        sig["data_consistency"] = True
    if stage == "flow":
        sig.update(flow_widths=list(cfg.flow.net.widths), flow_bottleneck=cfg.flow.net.bottleneck)
    return sig


def make_recon_unet(cfg: UNetConfig, channels: int) -> ReconUNet:
    return ReconUNet(channels + 1, channels, cfg.widths, cfg.bottleneck)


def recon_metrics() -> dict:
    """Per-image metrics on predictions clamped to the pixel range [0, 1] (data range 1)."""
    return {
        "mae": lambda pred, y: mae(pred.clamp(0, 1), y),
        "psnr": lambda pred, y: psnr(pred.clamp(0, 1), y, data_range=1.0),
        "ssim": lambda pred, y: ssim(pred.clamp(0, 1), y, data_range=1.0),
    }


METRIC_INFO = {"mae": (False, "MAE (pixel range [0, 1])"), "psnr": (True, "PSNR (dB)"), "ssim": (True, "SSIM")}


def train_recon(ctx: RunContext, stages: list[str] | None, x: torch.Tensor, operator: PixelOperator,
                signature) -> None:
    """Stages ``unet`` (task on random masks + noise, L1) and ``flow`` (against the frozen U-Net)."""
    c = ctx.cfg
    channels = operator.image_shape[0]
    for stage in stages or list(STAGES):
        torch.manual_seed(ctx.seed)
        if stage == "unet":
            task = make_task(make_recon_unet(c.unet, channels), c)
            obj = MaskedTaskObjective(task, operator, c.unet.rate_min, c.unet.rate_max, c.unet.noise_std)
            fit_stage(ctx, stage, obj.to(ctx.device), c.unet.loop, x, x, signature("unet"))
        elif stage == "flow":
            unet = trained_recon_unet(ctx, channels, signature)
            task = make_task(unet, c).freeze()
            model = build_flow_model(unet, operator, c.flow.net)
            obj = build_flow_objective(model, task, operator, c.flow).to(ctx.device)
            fit(obj, flow_batch_fn(x, x, operator, c.flow, ctx.device), x.shape[0], c.flow.loop,
                out_dir=ctx.run_dir, name=stage, signature=signature("flow"), seed=ctx.seed, device=ctx.device,
                dist=ctx.dist, resume=ctx.resume, desc=stage)
        else:
            raise ConfigError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")


def trained_recon_unet(ctx: RunContext, channels: int, signature) -> ReconUNet:
    return load_stage(ctx, "unet", make_recon_unet(ctx.cfg.unet, channels), signature("unet"))


def evaluate_recon(
    ctx: RunContext,
    x: torch.Tensor,
    operator: PixelOperator,
    signature,
    budgets: list[int],
    primary: str,
    source: dict,
    protocol: str,
    subsets: dict[str, torch.Tensor] | None = None,
    **extra,
) -> dict:
    """Evaluate flow / random / random-same-total (/ full) on images ``x``; write metrics.json and figures.

    The trained models are loaded (and their signatures checked) by the caller *before* data loading;
    ``budgets`` are pixel counts, reported in ``cfg.eval.budget_unit``. ``subsets`` maps a name to test-image
    indices reported separately (e.g. the fixed 100-image face subset).
    """
    c = ctx.cfg
    channels, h, w = operator.image_shape
    unet = trained_recon_unet(ctx, channels, signature)
    task = make_task(unet, c).freeze()
    flow = load_flow_policy(ctx, "flow", unet, operator, c.flow, signature("flow"))
    k0 = c.flow.first_samples
    rand = RandomPolicy(operator.n_locations)
    policies = {"flow": (flow, True), "random": (rand, False), "random-same-total": (rand, True)}
    metrics = recon_metrics()
    seeds = [ctx.seed * 1000 + s for s in range(c.eval.seeds)]
    x = x.to(ctx.device)
    per_seed, record = evaluate_over_seeds(policies, task, operator, x, x, budgets, k0, seeds, c.eval.batch_size,
                                           ctx.device, metrics, "flow", c.eval.grid_images)
    full = _full_scores(task, operator, x, metrics, c.eval.batch_size) if c.eval.full else None

    def rows_for(metric: str, idx: torch.Tensor | None = None) -> dict:
        runs = [run[metric] for run in per_seed]
        rows = {name: seed_row(runs, name, budgets, idx) for name in policies}
        if full is not None:
            v = full[metric] if idx is None else full[metric][idx]
            rows["full"] = {"mean": [float(v.mean())] * len(budgets), "std": [0.0] * len(budgets),
                            "n": int(v.numel()),
                            "note": "the same frozen U-Net given every pixel (its own error floor; the "
                                    "fully sampled measurement itself is exact)"}
        return rows

    others = [m for m in metrics if m != primary]
    rows = rows_for(primary)
    unit = c.eval.budget_unit
    values = [int(v) if unit == "pixels" else v for v in c.eval.budgets]
    hib = METRIC_INFO[primary][0]
    margins = {f"flow_vs_{ref}": [(f - r) if hib else (r - f) for f, r in zip(rows["flow"]["mean"],
                                                                                rows[ref]["mean"])]
               for ref in ("random", "random-same-total")}
    payload = metrics_payload(
        ctx.experiment, primary, hib, unit, values, rows,
        extra_metrics={m: rows_for(m) for m in others},
        budget_pixels=budgets, first_samples=k0, total_pixels=[b + k0 for b in budgets],
        margins=margins, data_consistency=c.task.data_consistency,
        seeds=c.eval.seeds, test_images=int(x.shape[0]), image_shape=[channels, h, w],
        data={**source, "protocol": protocol},
        **({"subsets": {name: {"indices": idx.tolist(), "metric": primary, "policies": rows_for(primary, idx),
                                "extra_metrics": {m: rows_for(m, idx) for m in others}}
                        for name, idx in subsets.items()}} if subsets else {}),
        **extra,
        notes=("flow and random-same-total see the k0 random first-measurement pixels plus the policy budget "
               "(total = budget + k0); random sees only the budget, as in the paper. One mask per image, shared "
               "by all colour channels. Reconstruction U-Net trained on random masks with noise, frozen for every "
               "policy; evaluation measurements are noiseless. margins: flow better by this much (positive = "
               "flow wins) in the primary metric. std = across evaluation seeds."
               + (" Data consistency: measured pixels are returned as measured, the U-Net fills the others."
                  if c.task.data_consistency else "")),
    )
    if ctx.dist.is_main:
        res = ctx.results_dir
        write_results(res, "metrics", payload, ctx.metadata(data_source=source))
        write_text(res / "metrics.md", results_markdown(payload))
        xlabel = f"policy budget ({'pixels' if unit == 'pixels' else '% of pixels'})"
        report.plot_metric_vs_budget(payload, res / f"{primary}_vs_budget.png",
                                     ylabel=METRIC_INFO[primary][1], xlabel=xlabel)
        for m in others:
            sub = {**payload, "metric": m, "policies": payload["extra_metrics"][m]}
            report.plot_metric_vs_budget(sub, res / f"{m}_vs_budget.png", ylabel=METRIC_INFO[m][1], xlabel=xlabel)
        labels = {b: _budget_label(v, unit) for v, b in zip(values, budgets)}
        report.plot_density({labels[b]: d for b, d in record.density_maps(h, w).items()}, res / "density.png",
                            title="flow: probability that a pixel is chosen (first-measurement pixels excluded)")
        n_grid = record.grid_acquired.shape[0]
        grid_x = x[:n_grid]
        acq = record.grid_acquired.reshape(-1, h, w)
        for v in c.eval.grid_budgets:
            b = budgets_to_pixels([v], unit, operator.n_locations)[0]
            m = record.grid_masks[b].to(ctx.device)
            with torch.inference_mode():
                recon = task.predict(operator.zero_filled(operator.measure(grid_x, m), m),
                                     operator.mask_to_image(m)).clamp(0, 1)
            imgs = grid_x[:, 0] if channels == 1 else grid_x
            rec = recon[:, 0] if channels == 1 else recon
            report.plot_mask_grid(imgs.cpu(), acq, m.cpu().reshape(-1, h, w), res / f"recon_{b}px.png",
                                  title=f"flow at {labels[b]} (+{k0} first pixels, blue): ground truth / mask / "
                                        f"measured / reconstruction", recon=rec.cpu())
    return payload


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
            out.append(markdown_table({**payload, "policies": rows}, 1.0, digits[metric]))

    tables(payload, "")
    for name, sub in payload.get("subsets", {}).items():
        tables(sub, f"{name}: ")
    return "\n".join(out)


def _budget_label(value: float, unit: str) -> str:
    return f"{value:g} px" if unit == "pixels" else f"{value:.4g}%"


@torch.inference_mode()
def _full_scores(task: ReconstructionTask, operator: PixelOperator, x: torch.Tensor, metrics: dict,
                 batch_size: int) -> dict[str, torch.Tensor]:
    out: dict[str, list] = {m: [] for m in metrics}
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        m = torch.ones(xb.shape[0], operator.n_locations, dtype=torch.bool, device=xb.device)
        pred = task.predict(operator.zero_filled(operator.measure(xb, m), m), operator.mask_to_image(m))
        for name, fn in metrics.items():
            out[name].append(fn(pred, xb).cpu())
    return {name: torch.cat(v) for name, v in out.items()}


def no_ablation(ctx: RunContext) -> dict:
    raise ConfigError(f"{ctx.experiment} has no ablation (the gate/loss ablation is part of mnist-classify)")


# ----------------------------------------------------------------------------- this experiment


def operator_for(cfg: Config) -> PixelOperator:
    s = cfg.data.image_size
    return PixelOperator(1, s, s)


def validate(cfg: Config) -> None:
    if cfg.data.image_size < MNIST_SIZE:
        raise ConfigError(f"data.image_size must be at least {MNIST_SIZE} (digits are zero-padded), "
                          f"got {cfg.data.image_size}")
    validate_recon(cfg, cfg.data.image_size ** 2)


def _signature(ctx: RunContext):
    return lambda stage: recon_signature(NAME, stage, ctx.cfg, 1, ctx.cfg.data.image_size)


def load_data(ctx: RunContext, split: str) -> tuple[torch.Tensor, str]:
    s = load_mnist(ctx.data_root / "mnist", split)
    subset = ctx.cfg.data.train_subset if split == "train" else ctx.cfg.data.test_subset
    n = len(s) if subset is None else min(subset, len(s))
    x = pad_images(s.images[:n], ctx.cfg.data.image_size).float().div_(255.0).unsqueeze(1)
    return x, s.source


def protocol(cfg: Config) -> str:
    s = cfg.data.image_size
    return (f"MNIST digits 28x28 zero-padded centrally to {s}x{s} ({(s - 28) // 2} px per side), pixel values "
            f"in [0, 1]; standard 60k/10k split, first {cfg.data.test_subset or 10000} test images evaluated")


def train(ctx: RunContext, stages: list[str] | None = None) -> None:
    x, source = load_data(ctx, "train")
    record_data_sources(ctx, {"train": source})
    train_recon(ctx, stages, x, operator_for(ctx.cfg), _signature(ctx))


def evaluate(ctx: RunContext) -> dict:
    c = ctx.cfg
    op = operator_for(c)
    sig = _signature(ctx)
    trained_recon_unet(ctx, 1, sig)  # fail on a missing / mismatched checkpoint before reading data
    x, test_source = load_data(ctx, "test")
    budgets = budgets_to_pixels(c.eval.budgets, c.eval.budget_unit, op.n_locations)
    return evaluate_recon(ctx, x, op, sig, budgets, "mae", {"test": test_source, **recorded_data_sources(ctx)},
                          protocol(c))


ablate = no_ablation


def default_results_dir() -> Path:
    return Path("results") / NAME


__all__ = ["Config", "SMOKE", "NAME", "STAGES", "validate", "train", "evaluate", "ablate"]
