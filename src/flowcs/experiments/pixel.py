"""Building blocks of the pixel-sampling experiments (MNIST classification/reconstruction, faces).

``random-first`` protocol (SPEC §1): measure ``first_samples`` random pixels,
zero-fill, encode with the frozen reconstruction U-Net encoder, and let a
policy choose ``budget`` more pixels. The first samples are *reused* by the
task (they were measured), so every table reports the policy budget and the
total number of samples, and the random baseline at both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..flow.model import FlowModel, FrozenEncoder
from ..flow.nets import DualEncoderUNet
from ..flow.objective import FlowTaskObjective
from ..flow.targets import TargetEstimator
from ..masks import random_mask, random_masks_varying, rate_to_budget, sample_budgets
from ..operators.pixel import PixelOperator
from ..policies.base import Policy
from ..tasks.base import Task
from ..tasks.unet import ReconUNet, network_input
from ..training.loop import LoopConfig


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
            noise = torch.randn(x.shape, generator=generator).to(x.device)
            meas = meas + self.noise_std * noise * op.mask_to_image(mask)
        pred = self.task.predict(op.zero_filled(meas, mask), op.mask_to_image(mask))
        loss = self.task.loss(pred, y)
        with torch.no_grad():
            score = self.task.score(pred, y).float().mean()
        return {"loss": loss, self.task.metric: score}


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
    on_batch: Callable[[str, int, dict[int, torch.Tensor], torch.Tensor], None] | None = None,
    progress: Callable | None = None,
) -> dict[str, dict[int, torch.Tensor]]:
    """Per-sample task scores for every (policy, budget) on one seed.

    ``policies`` maps a row name to (policy, reuse_first): with ``reuse_first``
    the policy starts from the random first measurement (acquired pixels are
    kept and the condition is its U-Net input); without it the policy gets no
    first measurement and only ``budget`` pixels.
    """
    task.model.eval()
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[int, list[torch.Tensor]]] = {name: {b: [] for b in budgets} for name in policies}
    batches = range(0, images.shape[0], batch_size)
    for start in progress(batches) if progress else batches:
        x = images[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        acquired, cond = first_measurement(operator, x, first_samples, gen)
        none = torch.zeros_like(acquired)
        for name, (policy, reuse) in policies.items():
            masks = policy.propose_many(cond if reuse else condition_from(operator, x, none), budgets,
                                        acquired if reuse else none, gen)
            for b, m in masks.items():
                pred = task.predict(operator.zero_filled(operator.measure(x, m), m), operator.mask_to_image(m))
                out[name][b].append(task.score(pred, y).cpu())
            if on_batch:
                on_batch(name, start, masks, acquired if reuse else none)
    return {name: {b: torch.cat(v) for b, v in per.items()} for name, per in out.items()}
