"""Building blocks of the pixel-sampling experiments (MNIST classification/reconstruction, faces).

``random-first`` protocol (SPEC §1): measure ``first_samples`` random pixels,
zero-fill, encode with the frozen reconstruction U-Net encoder, and let a
policy choose ``budget`` more pixels. The first samples are *reused* by the
task (they were measured), so every table reports the policy budget and the
total number of samples, and the random baseline at both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..flow.model import FlowModel, FrozenEncoder
from ..flow.nets import DualEncoderUNet
from ..flow.objective import FlowTaskObjective
from ..flow.policy import FlowPolicy
from ..flow.targets import TargetEstimator
from ..masks import check_rate, random_mask, random_masks_varying, rate_to_budget, sample_budgets
from ..operators.pixel import PixelOperator
from ..policies.base import Policy
from ..rng import randn_rows, shard_generator
from ..tasks.base import Task
from ..tasks.unet import ReconUNet, network_input
from ..training.distributed import all_reduce_sum, current_dist, gather_rows, shard_range
from ..training.loop import LoopConfig
from .common import RunContext, load_stage

BUDGET_UNITS = ("pixels", "percent")


@dataclass
class UNetConfig:
    """The reconstruction U-Net (paper App. C), trained on randomly masked noisy inputs at rates in percent."""

    rate_min: float = 1.0
    rate_max: float = 50.0
    noise_std: float = 0.05
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    bottleneck: int = 256
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=2, batch_size=64, lr=1e-3))


@dataclass
class FlowNetConfig:
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    bottleneck: int = 128
    time_dim: int = 64


@dataclass
class FlowTrainConfig:
    first_samples: int = 16
    rate_min: float = 1.0
    rate_max: float = 8.0
    target: str = "saliency"
    best_of_r: int = 16
    loss: str = "both"
    gate_a: float = 30.0
    gate_b: float = 1.0
    steps: int = 20
    net: FlowNetConfig = field(default_factory=FlowNetConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=3, batch_size=128, lr=1e-3))


class MaskedTaskObjective(nn.Module):
    """Trains a task model on randomly masked (optionally noisy) inputs at random rates."""

    def __init__(self, task: Task, operator: PixelOperator, rate_min: float, rate_max: float,
                 noise_std: float = 0.0):
        super().__init__()
        self.model = task.model
        self.task, self.operator = task, operator
        self.rate_min, self.rate_max, self.noise_std = rate_min, rate_max, noise_std

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        op = self.operator
        ks = sample_budgets(x.shape[0], op.n_locations, self.rate_min, self.rate_max, generator)
        mask = random_masks_varying(ks, op.n_locations, generator, x.device)
        meas = op.measure(x, mask)
        if self.noise_std > 0:
            noise = randn_rows(*x.shape, generator=generator, device=x.device)
            meas = meas + self.noise_std * noise * op.mask_to_image(mask)
        pred = self.task.predict(op.zero_filled(meas, mask), op.mask_to_image(mask))
        loss = self.task.loss(pred, y)
        with torch.no_grad():
            score = self.task.score(pred, y).float().mean()
        return {"loss": loss, self.task.metric: score}


def budgets_to_pixels(values: list[float], unit: str, n_locations: int, what: str = "budget") -> list[int]:
    """Budgets given in ``pixels`` (integers) or ``percent`` of the ``n_locations`` pixels → pixel counts.

    A budget outside (0, N] is a :class:`ConfigError` naming the value and the pixel count.
    """
    if unit not in BUDGET_UNITS:
        raise ConfigError(f"{what} unit {unit!r} is unknown; choose one of {', '.join(BUDGET_UNITS)}")
    out = []
    for v in values:
        if unit == "percent":
            out.append(rate_to_budget(check_rate(v, what), n_locations))
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v != int(v) or v < 1:
            raise ConfigError(f"{what} {v!r} must be a positive whole number of pixels")
        if v > n_locations:
            raise ConfigError(f"{what} of {int(v)} pixels exceeds the {n_locations} pixels of the image")
        out.append(int(v))
    return out


def check_first_samples(first_samples: int, max_budget: int, n_locations: int) -> None:
    """The random first measurement plus the largest policy budget must fit in the image."""
    if first_samples < 0:
        raise ConfigError(f"flow.first_samples must be >= 0, got {first_samples}")
    if first_samples + max_budget > n_locations:
        raise ConfigError(f"flow.first_samples={first_samples} plus the largest budget of {max_budget} pixels "
                          f"exceeds the {n_locations} pixels of the image")


def first_measurement(
    operator: PixelOperator, x: torch.Tensor, k0: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random first measurement → (acquired bool (B, N), condition = U-Net input (B, C+1, H, W))."""
    acquired = random_mask(x.shape[0], operator.n_locations, k0, None, generator, x.device)
    return acquired, condition_from(operator, x, acquired)


def condition_from(operator: PixelOperator, x: torch.Tensor, acquired: torch.Tensor) -> torch.Tensor:
    zf = operator.zero_filled(operator.measure(x, acquired), acquired)
    return network_input(zf, operator.mask_to_image(acquired))


def build_flow_model(unet: ReconUNet, operator: PixelOperator, net: FlowNetConfig) -> FlowModel:
    _, h, w = operator.image_shape
    velocity = DualEncoderUNet(h, w, unet.feature_channels, net.widths, net.bottleneck, net.time_dim)
    return FlowModel(FrozenEncoder(unet, "encode"), velocity)


def load_flow_policy(ctx: RunContext, stage: str, unet: ReconUNet, operator: PixelOperator, cfg: FlowTrainConfig,
                     signature: dict) -> FlowPolicy:
    """The flow policy of a finished stage: frozen ``unet`` encoder + trained velocity net."""
    model = build_flow_model(unet, operator, cfg.net)
    load_stage(ctx, stage, model, signature)
    return FlowPolicy(model, operator.n_locations, steps=cfg.steps)


def build_flow_objective(model: FlowModel, task: Task, operator: PixelOperator, cfg: FlowTrainConfig
                         ) -> FlowTaskObjective:
    target = TargetEstimator(cfg.target, task, operator, cfg.best_of_r)
    return FlowTaskObjective(model, task, operator, target, cfg.loss, cfg.gate_a, cfg.gate_b)


def flow_batch_fn(images: torch.Tensor, labels: torch.Tensor, operator: PixelOperator, cfg: FlowTrainConfig,
                  device: torch.device) -> Callable:
    """Batches for :class:`FlowTaskObjective`: fresh first measurement and a random budget per batch."""

    def fn(idx: torch.Tensor, gen: torch.Generator) -> dict:
        x = images[idx].to(device)
        y = labels[idx].to(device)
        acquired, cond = first_measurement(operator, x, cfg.first_samples, gen)
        rate = cfg.rate_min + (cfg.rate_max - cfg.rate_min) * float(torch.rand(1, generator=gen))
        return {"x": x, "y": y, "condition": cond, "acquired": acquired,
                "k": rate_to_budget(rate, operator.n_locations)}

    return fn


MetricFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.inference_mode()
def evaluate_policies(
    policies: dict[str, tuple[Policy, bool]],
    task: Task,
    operator: PixelOperator,
    images: torch.Tensor,
    labels: torch.Tensor,
    budgets: list[int],
    first_samples: int,
    seed: int,
    batch_size: int,
    device: torch.device,
    metrics: dict[str, MetricFn] | None = None,
    on_batch: Callable[[str, int, dict[int, torch.Tensor], torch.Tensor], None] | None = None,
    progress: Callable | None = None,
) -> dict[str, dict[str, dict[int, torch.Tensor]]]:
    """Per-sample metrics ``fn(prediction, labels) -> (B,)`` for every (policy, budget) on one seed.

    ``policies`` maps a row name to (policy, reuse_first): with ``reuse_first`` the policy starts from the
    random first measurement (acquired pixels are kept and the condition is its U-Net input); without it
    the policy gets no first measurement and only ``budget`` pixels. ``metrics`` default: the task's own
    metric. Returns ``{metric: {policy: {budget: per-sample values}}}``; each prediction is computed once.
    Under torchrun each process evaluates its slice of every batch, with the noise a single process
    would draw for those samples (:mod:`flowcs.rng`); the per-sample values are gathered in order, so
    the result is exactly the single-process one.
    """
    metrics = metrics or {task.metric: task.score}
    task.model.eval()
    dist = current_dist()
    out = {m: {name: {b: [] for b in budgets} for name in policies} for m in metrics}
    rows_seen: list[torch.Tensor] = []
    batches = range(0, images.shape[0], batch_size)
    for i, start in enumerate(progress(batches) if progress and dist.is_main else batches):
        stop = min(start + batch_size, images.shape[0])
        lo, hi = shard_range(stop - start, dist)
        if hi <= lo:
            continue  # fewer samples than processes in this batch
        gen = shard_generator(seed * 1_000_003 + i, dist.rank, dist.world_size, total=stop - start, start=lo)
        rows_seen.append(torch.arange(start + lo, start + hi))
        x = images[start + lo:start + hi].to(device)
        y = labels[start + lo:start + hi].to(device)
        acquired, cond = first_measurement(operator, x, first_samples, gen)
        none = torch.zeros_like(acquired)
        for name, (policy, reuse) in policies.items():
            masks = policy.propose_many(cond if reuse else condition_from(operator, x, none), budgets,
                                        acquired if reuse else none, gen)
            for b, m in masks.items():
                pred = task.predict(operator.zero_filled(operator.measure(x, m), m), operator.mask_to_image(m))
                for metric, fn in metrics.items():
                    out[metric][name][b].append(fn(pred, y).cpu())
            if on_batch:
                on_batch(name, start, masks, acquired if reuse else none)
    order = gather_rows(_cat(rows_seen, torch.long), dist)

    def assemble(values: list[torch.Tensor]) -> torch.Tensor:
        gathered = gather_rows(_cat(values, torch.float64), dist)
        result = torch.empty_like(gathered)
        result[order] = gathered  # back to the data set's order, whatever the number of processes
        return result

    return {m: {name: {b: assemble(v) for b, v in per.items()} for name, per in rows.items()}
            for m, rows in out.items()}


def _cat(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


@dataclass
class MaskRecord:
    """What one policy chose on the first evaluation seed: density sums and the first images' masks."""

    density: dict[int, torch.Tensor]  # per budget: (N,) count of images that chose each *new* location
    n_images: int = 0
    grid_masks: dict[int, torch.Tensor] = field(default_factory=dict)  # per budget: (n_grid, N) full masks
    grid_acquired: torch.Tensor | None = None  # (n_grid, N) first-measurement locations

    def density_maps(self, height: int, width: int) -> dict[int, torch.Tensor]:
        """Per budget: probability that a location is chosen by the policy (first samples excluded)."""
        return {b: (d / max(self.n_images, 1)).reshape(height, width) for b, d in self.density.items()}


def evaluate_over_seeds(
    policies: dict[str, tuple[Policy, bool]],
    task: Task,
    operator: PixelOperator,
    images: torch.Tensor,
    labels: torch.Tensor,
    budgets: list[int],
    first_samples: int,
    seeds: list[int],
    batch_size: int,
    device: torch.device,
    metrics: dict[str, MetricFn] | None = None,
    record: str | None = "flow",
    n_grid: int = 8,
) -> tuple[list[dict[str, dict[str, dict[int, torch.Tensor]]]], MaskRecord]:
    """Run :func:`evaluate_policies` once per seed (``metrics`` default: the task metric).

    Returns the per-seed results (``[{metric: {policy: {budget: values}}}]``) and a :class:`MaskRecord` of
    policy ``record`` on the first seed (sampling density over all images, masks of the first ``n_grid``).
    """
    metrics = metrics or {task.metric: task.score}
    rec = MaskRecord({b: torch.zeros(operator.n_locations) for b in budgets})

    def on_batch(name, start, masks, acquired):
        if name != record:
            return
        for b, m in masks.items():
            rec.density[b] += (m & ~acquired).float().sum(0).cpu()
        rec.n_images += int(acquired.shape[0])
        if start == 0:
            rec.grid_masks = {b: m[:n_grid].cpu() for b, m in masks.items()}
            rec.grid_acquired = acquired[:n_grid].cpu()

    per_seed = []
    for i, seed in enumerate(seeds):
        per_seed.append(evaluate_policies(
            policies, task, operator, images, labels, budgets, first_samples, seed, batch_size, device, metrics,
            on_batch=on_batch if i == 0 and record else None,
            progress=lambda it, i=i: tqdm(it, desc=f"evaluate seed {i}", leave=False)))
    dist = current_dist()  # each process saw its own slice of the images: sum the densities
    for b in rec.density:
        rec.density[b] = all_reduce_sum(rec.density[b], dist)
    rec.n_images = int(all_reduce_sum(torch.tensor(rec.n_images), dist))
    return per_seed, rec
