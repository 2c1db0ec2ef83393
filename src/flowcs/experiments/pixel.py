"""Building blocks of the pixel-sampling experiments (MNIST classification/reconstruction, faces).

``random-first`` protocol (SPEC §1): measure ``first_samples`` random pixels,
zero-fill, encode with the frozen reconstruction U-Net encoder, and let a
policy choose ``budget`` more pixels. The first samples are *reused* by the
task (they were measured), so every table reports the policy budget and the
total number of samples, and the random baseline at both
(:class:`PixelExperiment` holds what the three pixel experiments share).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..acquisition import Acquisition, RandomFirst, UNetInput
from ..errors import ConfigError
from ..evaluation.loop import Entry, MaskEvent
from ..evaluation.results import mean_pairwise_iou
from ..flow.model import FlowModel, FrozenEncoder
from ..flow.nets import ConvVelocity, DualEncoderUNet
from ..flow.objective import FlowTaskObjective, ObjectiveConfig
from ..flow.policy import FlowPolicy
from ..flow.targets import TargetEstimator
from ..masks import check_rate, random_masks_varying, rate_to_budget, sample_budgets
from ..operators.pixel import PixelOperator
from ..policies.random import RandomPolicy
from ..rng import randn_rows
from ..tasks.base import Task
from ..tasks.unet import ReconUNet
from ..training.distributed import all_reduce_sum, current_dist, gather_rows
from ..training.loop import LoopConfig
from ..training.stages import load_stage
from .base import Experiment
from .context import RunContext

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
    # unet: dual-encoder U-Net over the frozen reconstruction U-Net's features (widths, bottleneck);
    # conv: A-DPS's small conv net over the condition image (conv_widths, hidden, pool; flowcs.flow.nets.conv_head)
    kind: str = "unet"
    conv_widths: list[int] = field(default_factory=lambda: [16, 32, 32])
    hidden: int = 256
    pool: int = 4


FLOW_NETS = ("unet", "conv")


def flow_net_signature(net: FlowNetConfig) -> dict:
    """The velocity net's shape for a checkpoint signature (the U-Net keys alone when ``kind`` is ``unet``, so
    checkpoints from before ``kind`` existed still load)."""
    if net.kind == "unet":
        return {"flow_widths": list(net.widths), "flow_bottleneck": net.bottleneck}
    return {"flow_net": net.kind, "flow_widths": list(net.conv_widths), "flow_hidden": net.hidden,
            "flow_pool": net.pool}


@dataclass
class FlowTrainConfig(ObjectiveConfig):
    first_samples: int = 16
    rate_min: float = 1.0
    rate_max: float = 8.0
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


SPLITS = ("val", "test")


def check_split(split: str) -> None:
    """``eval.split``: ``val`` (choices are made there) or ``test`` (evaluated once per reported result)."""
    if split not in SPLITS:
        raise ConfigError(f"eval.split {split!r} must be 'val' or 'test'")


def check_rate_range(lo: float, hi: float, what: str) -> None:
    """A training rate range in percent: both ends valid, ``lo <= hi``."""
    check_rate(lo, f"{what}.rate_min")
    check_rate(hi, f"{what}.rate_max")
    if lo > hi:
        raise ConfigError(f"{what}.rate_min {lo} exceeds {what}.rate_max {hi}")


def first_measurement(
    operator: PixelOperator, x: torch.Tensor, k0: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random first measurement → (acquired bool (B, N), condition = U-Net input (B, C+1, H, W))."""
    acq = Acquisition.start(operator, x, RandomFirst(k0), UNetInput(), generator)
    return acq.acquired, acq.condition()


def build_flow_model(unet: ReconUNet, operator: PixelOperator, net: FlowNetConfig) -> FlowModel:
    c, h, w = operator.image_shape
    if net.kind not in FLOW_NETS:
        raise ConfigError(f"flow.net.kind {net.kind!r}: choose one of {', '.join(FLOW_NETS)}")
    if net.kind == "conv":  # reads the condition image itself: no pretrained encoder
        velocity = ConvVelocity(c + 1, operator.n_locations, net.conv_widths, net.hidden, net.pool, net.time_dim)
        return FlowModel(FrozenEncoder(nn.Identity()), velocity, acquired_input=True)
    velocity = DualEncoderUNet(h, w, unet.feature_channels, net.widths, net.bottleneck, net.time_dim)
    return FlowModel(FrozenEncoder(unet, "encode"), velocity)


def load_flow_policy(ctx: RunContext, stage: str, unet: ReconUNet, operator: PixelOperator, cfg: FlowTrainConfig,
                     signature: dict) -> FlowPolicy:
    """The flow policy of a finished stage: frozen ``unet`` encoder + trained velocity net."""
    model = build_flow_model(unet, operator, cfg.net)
    load_stage(ctx, stage, model, signature)
    return FlowPolicy(model, operator.n_locations, steps=cfg.steps, rounds=cfg.rounds, condition_fn=UNetInput(),
                      operator=operator)


def build_flow_objective(model: FlowModel, task: Task, operator: PixelOperator, cfg: FlowTrainConfig
                         ) -> FlowTaskObjective:
    target = TargetEstimator(cfg.target, task, operator, cfg.best_of_r, cfg.greedy_chunks)
    return FlowTaskObjective.from_config(model, task, operator, target, cfg)


def flow_batch_fn(images: torch.Tensor, labels: torch.Tensor, operator: PixelOperator, cfg: FlowTrainConfig,
                  device: torch.device) -> Callable:
    """Batches for :class:`FlowTaskObjective`: fresh first measurement and a random budget per batch."""

    def fn(idx: torch.Tensor, gen: torch.Generator) -> dict:
        x = images[idx].to(device)
        y = labels[idx].to(device)
        acq = Acquisition.start(operator, x, RandomFirst(cfg.first_samples), UNetInput(), gen)
        rate = cfg.rate_min + (cfg.rate_max - cfg.rate_min) * float(torch.rand(1, generator=gen))
        return {"x": x, "y": y, "condition": acq.condition(), "acquired": acq.acquired,
                "k": rate_to_budget(rate, operator.n_locations), "acquisition": acq}

    return fn


class DensityRecord:
    """What the flow chose on the first evaluation seed: per budget, how many images chose each *new* location,
    the new locations of the first ``iou_images`` images (adaptivity) and the full masks of the first ``n_grid``
    images (for the mask-grid figures)."""

    def __init__(self, budgets: list[int], n_locations: int, name: str = "flow", n_grid: int = 8,
                 iou_images: int = 1000):
        self.name, self.n_grid, self.iou_images = name, n_grid, iou_images
        self.density = {b: torch.zeros(n_locations) for b in budgets}
        self.n_images = 0
        self.chosen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {b: [] for b in budgets}
        self.grid_masks: dict[int, torch.Tensor] = {}
        self.grid_acquired: torch.Tensor | None = None

    def __call__(self, event: MaskEvent) -> None:
        if event.name != self.name or event.seed_index != 0:
            return
        keep = event.rows < self.iou_images
        for b, m in event.masks.items():
            new = m & ~event.acquired
            self.density[b] += new.float().sum(0).cpu()
            if keep.any():
                self.chosen[b].append((event.rows[keep].cpu(), new[keep.to(new.device)].cpu()))
        self.n_images += int(event.acquired.shape[0])
        if int(event.rows[0]) == 0:
            self.grid_masks = {b: m[:self.n_grid].cpu() for b, m in event.masks.items()}
            self.grid_acquired = event.acquired[:self.n_grid].cpu()

    def reduce(self) -> DensityRecord:
        """Sum the counts of every process (each saw its own slice of the images)."""
        dist = current_dist()
        for b in self.density:
            self.density[b] = all_reduce_sum(self.density[b], dist)
        self.n_images = int(all_reduce_sum(torch.tensor(self.n_images), dist))
        for b, parts in self.chosen.items():
            rows = gather_rows(torch.cat([r for r, _ in parts]) if parts else torch.zeros(0, dtype=torch.long), dist)
            new = gather_rows(torch.cat([m for _, m in parts]).to(torch.uint8) if parts else
                              torch.zeros(0, self.density[b].numel(), dtype=torch.uint8), dist)
            self.chosen[b] = [(rows, new.bool())]
        return self

    def adaptivity_report(self, budgets: list[int]) -> dict:
        """The flow's mean pairwise IoU per budget, for the results beside the density maps."""
        iou = self.adaptivity()
        return {"flow_mean_pairwise_iou": [iou.get(b) for b in budgets],
                "images": min(self.iou_images, self.n_images),
                "note": "mean IoU of the new locations chosen for different images (first evaluation seed): 1 = "
                        "a fixed mask; random masks of k of N locations give about k / (2N - k)"}

    def adaptivity(self) -> dict[int, float]:
        """Per budget: the mean pairwise IoU of the new locations chosen for different images (1 = a fixed mask)."""
        out = {}
        for b, parts in self.chosen.items():
            masks = torch.cat([m for _, m in parts]) if parts else torch.zeros(0)
            if masks.shape[0] >= 2:
                out[b] = round(mean_pairwise_iou(masks), 4)
        return out

    def density_maps(self, height: int, width: int) -> dict[int, torch.Tensor]:
        """Per budget: probability that a location is chosen by the policy (first samples excluded)."""
        return {b: (d / max(self.n_images, 1)).reshape(height, width) for b, d in self.density.items()}


class PixelExperiment(Experiment):
    """What the three pixel experiments share: the random-first protocol and its three rows (flow; random with
    the policy budget only, as in the paper; random with the same total as the flow)."""

    def entries(self, ctx, setup) -> dict[str, Entry]:
        rand = RandomPolicy(setup.operator.n_locations)
        return {"flow": Entry(self.flow_policy(ctx)), "random": Entry(rand, reuse_first=False),
                "random-same-total": Entry(rand)}
