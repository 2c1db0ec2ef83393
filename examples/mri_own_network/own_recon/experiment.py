"""Experiment ``own-recon-mri``: the flow policy picks Cartesian k-space lines for *your* reconstruction network.

Data: complex images made from the Shepp–Logan phantom of ``<data root>/phantom_skimage/phantom.png``
(random rotation, scale, shift, contrast and a smooth random phase per image; seeded). Geometry: flowcs'
:class:`~flowcs.operators.KSpaceLineOperator` (one location = one phase-encode column). The first measurement
is the central low-frequency band. Stages:

* ``network`` trains the user's :class:`~own_recon.network.ResidualCNN` on random line masks (MSE);
* ``flow`` freezes it inside :class:`~own_recon.task.OwnReconTask` and trains the flow policy with flowcs'
  :class:`~flowcs.flow.objective.FlowTaskObjective` and :func:`~flowcs.training.loop.fit`.

``evaluate`` compares the flow policy with the random policy (same band, same budgets) by the network's
PSNR, and reports the zero-filled PSNR of the same masks as a second metric. Run it (repository root)::

    PYTHONPATH=examples/mri_own_network FLOWCS_PLUGINS=own_recon \\
        flowcs run own-recon-mri --smoke --config examples/mri_own_network/config.yaml
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowcs.acquisition import BandFirst, Condition
from flowcs.errors import ConfigError, DataError
from flowcs.evaluation import Entry, Setup, Split, evaluate, figures
from flowcs.evaluation.draws import NamedDraws
from flowcs.evaluation.tables import metrics_payload, write_results
from flowcs.experiments.base import Experiment
from flowcs.flow.model import FlowModel, FrozenEncoder
from flowcs.flow.nets.mlp import MRIVelocityMLP, PooledCondition
from flowcs.flow.objective import FlowTaskObjective
from flowcs.flow.policy import FlowPolicy
from flowcs.flow.targets import TargetEstimator
from flowcs.masks import random_mask, rate_to_budget
from flowcs.operators import KSpaceLineOperator, low_frequency_band
from flowcs.policies import RandomPolicy
from flowcs.training.loop import LoopConfig
from flowcs.training.stages import fit_stage, load_stage, tensor_batches

from .network import ResidualCNN
from .task import OwnReconTask

NAME = "own-recon-mri"


@dataclass
class DataConfig:
    size: int = 32
    train_images: int = 1024
    test_images: int = 256


@dataclass
class NetworkConfig:
    width: int = 32
    depth: int = 5
    rate_min: float = 10.0          # new lines (beyond the band) during training, % of the columns
    rate_max: float = 50.0
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=4, batch_size=32, lr=2e-3))


@dataclass
class FlowConfig:
    lf_fraction: float = 0.125      # central band measured first (fraction of the columns)
    rate_min: float = 10.0
    rate_max: float = 40.0
    target: str = "saliency"
    loss: str = "both"
    gate_a: float = 30.0
    gate_b: float = 1.0
    steps: int = 10
    pool: int = 8
    hidden: int = 256
    layers: int = 2
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=4, batch_size=32, lr=2e-3))


@dataclass
class EvalConfig:
    budgets: list[int] = field(default_factory=lambda: [2, 4, 8])   # new k-space lines per image
    seeds: int = 2
    batch_size: int = 128


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SMOKE = {"data": {"train_images": 384, "test_images": 96},
         "network": {"loop": {"epochs": 3}}, "flow": {"loop": {"epochs": 3}}, "eval": {"seeds": 1}}


# ----------------------------------------------------------------------------- data


def phantom_images(path, n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` complex (2, size, size) variations of the phantom: rotation, scale, shift, contrast, smooth phase."""
    from PIL import Image

    if not path.is_file():
        raise DataError(f"{path}: phantom image not found (the example reads <data root>/phantom_skimage/phantom.png;"
                        f" pass --data DIR)")
    base = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)[None, None]
    base = F.interpolate(base, size=(4 * size, 4 * size), mode="bilinear", antialias=True, align_corners=False)
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
    angle, scale = u(-math.pi / 6, math.pi / 6), u(0.8, 1.15)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * torch.cos(angle), -scale * torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = scale * torch.sin(angle), scale * torch.cos(angle)
    theta[:, :, 2] = 0.1 * (2 * torch.rand(n, 2, generator=g) - 1)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    mag = F.grid_sample(base.expand(n, -1, -1, -1), grid, align_corners=False)[:, 0] * u(0.7, 1.0)[:, None, None]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    c = (2 * torch.rand(n, 3, generator=g) - 1) * math.pi / 2
    phase = c[:, 0, None, None] + c[:, 1, None, None] * xx + c[:, 2, None, None] * yy
    return torch.stack([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1)


def load_split(ctx, split: str) -> torch.Tensor:
    c = ctx.cfg.data
    n = c.train_images if split == "train" else c.test_images
    return phantom_images(ctx.data_root / "phantom_skimage" / "phantom.png", n, c.size,
                          seed=1 if split == "train" else 2)


# ----------------------------------------------------------------------------- models


class NetworkObjective(nn.Module):
    """Stage ``network``: the user's net on the band plus a random number of random lines, MSE."""

    def __init__(self, task: OwnReconTask, op: KSpaceLineOperator, band: torch.Tensor, cfg: NetworkConfig):
        super().__init__()
        self.model, self.task, self.op, self.band, self.cfg = task.model, task, op, band, cfg

    def forward(self, x, y, generator=None):
        acquired = self.band.to(x.device).expand(x.shape[0], -1)
        rate = self.cfg.rate_min + (self.cfg.rate_max - self.cfg.rate_min) * float(torch.rand(1, generator=generator))
        m = acquired | random_mask(x.shape[0], self.op.n_locations, rate_to_budget(rate, self.op.n_locations),
                                   acquired, generator, x.device)
        pred = self.task.predict(self.op.zero_filled(self.op.measure(x, m), m), self.op.mask_to_image(m))
        return {"loss": self.task.loss(pred, y)}


def operator_for(cfg: Config) -> KSpaceLineOperator:
    return KSpaceLineOperator(cfg.data.size, cfg.data.size)


def make_task(cfg: Config) -> OwnReconTask:
    return OwnReconTask(ResidualCNN(cfg.network.width, cfg.network.depth))


def build_flow_model(cfg: Config, n: int) -> FlowModel:
    f = cfg.flow
    velocity = MRIVelocityMLP(n, 2 * f.pool ** 2, f.hidden, f.layers, time_dim=32)
    return FlowModel(FrozenEncoder(PooledCondition(f.pool)), velocity)


def signature(cfg: Config, stage: str) -> dict:
    """What shapes each stage's network (a checkpoint of other sizes is refused)."""
    sig = {"experiment": NAME, "size": cfg.data.size, "width": cfg.network.width, "depth": cfg.network.depth}
    if stage == "flow":
        sig.update(pool=cfg.flow.pool, hidden=cfg.flow.hidden, layers=cfg.flow.layers)
    return sig


class ZeroFilledImage(Condition):
    """The policy sees the zero-filled image of the band (its encoder average-pools it)."""

    def __call__(self, operator, zero_filled, acquired):
        return zero_filled


def band_first(cfg: Config) -> BandFirst:
    return BandFirst(low_frequency_band(cfg.data.size, cfg.flow.lf_fraction), "central band")


# ----------------------------------------------------------------------------- the experiment


class OwnReconMRI(Experiment):
    name = NAME
    config_class = Config
    stages = ("network", "flow")
    smoke = SMOKE

    def validate(self, cfg: Config) -> None:
        if cfg.data.size < 8:
            raise ConfigError(f"data.size must be at least 8, got {cfg.data.size}")
        band = int(low_frequency_band(cfg.data.size, cfg.flow.lf_fraction).sum())
        if max(cfg.eval.budgets) + band > cfg.data.size:
            raise ConfigError(f"eval.budgets up to {max(cfg.eval.budgets)} plus the {band}-line band exceed the "
                              f"{cfg.data.size} lines")

    def training_data(self, ctx) -> torch.Tensor:
        return load_split(ctx, "train")

    def trained_task(self, ctx) -> OwnReconTask:
        task = make_task(ctx.cfg)
        load_stage(ctx, "network", task.model, signature(ctx.cfg, "network"))
        return task.freeze()

    def train_stage(self, ctx, stage: str, x: torch.Tensor) -> None:
        cfg = ctx.cfg
        op, first, condition = operator_for(cfg), band_first(cfg), ZeroFilledImage()
        if stage == "network":
            obj = NetworkObjective(make_task(cfg), op, first.band, cfg.network).to(ctx.device)
            fit_stage(ctx, "network", obj, cfg.network.loop, tensor_batches(x, x, ctx.device), x.shape[0],
                      signature(cfg, "network"))
            return
        task, f = self.trained_task(ctx), cfg.flow
        objective = FlowTaskObjective(build_flow_model(cfg, op.n_locations), task, op,
                                      TargetEstimator(f.target, task, op), f.loss, f.gate_a, f.gate_b).to(ctx.device)

        def flow_batches(idx, gen):
            xb = x[idx].to(ctx.device)
            acquired = first.acquired(xb.shape[0], op.n_locations, None, xb.device)
            cond = condition(op, op.zero_filled(op.measure(xb, acquired), acquired), acquired)
            rate = f.rate_min + (f.rate_max - f.rate_min) * float(torch.rand(1, generator=gen))
            return {"x": xb, "y": xb, "condition": cond, "acquired": acquired,
                    "k": rate_to_budget(rate, op.n_locations)}

        fit_stage(ctx, "flow", objective, f.loop, flow_batches, x.shape[0], signature(cfg, "flow"))

    def flow_policy(self, ctx, flow_cfg=None, stage: str = "flow") -> FlowPolicy:
        op = operator_for(ctx.cfg)
        model = load_stage(ctx, stage, build_flow_model(ctx.cfg, op.n_locations), signature(ctx.cfg, "flow"))
        return FlowPolicy(model, op.n_locations, steps=ctx.cfg.flow.steps)

    def setup(self, ctx, split=None, train=False) -> Setup:
        cfg = ctx.cfg
        task = self.trained_task(ctx)
        x = load_split(ctx, "test").to(ctx.device)
        return Setup(experiment=NAME, operator=operator_for(cfg), task=task, first=band_first(cfg),
                     condition=ZeroFilledImage(), test=Split(x, x), budgets=list(cfg.eval.budgets),
                     budget_values=list(cfg.eval.budgets), budget_unit="lines",
                     metrics={"psnr": lambda pred, y, rows: task.score(pred, y)}, primary="psnr",
                     higher_is_better=True)

    def entries(self, ctx, setup: Setup) -> dict[str, Entry]:
        zero_filled = lambda zf, mask_image: zf  # noqa: E731 - the same masks read without the network
        return {name: Entry(policy, readers={name: setup.task.predict, f"{name} zero-filled": zero_filled})
                for name, policy in (("flow", self.flow_policy(ctx)),
                                     ("random", RandomPolicy(setup.operator.n_locations)))}

    def evaluate(self, ctx) -> dict:
        cfg = ctx.cfg
        setup = self.setup(ctx)
        res = evaluate(setup, self.entries(ctx, setup), NamedDraws(ctx.seed), cfg.eval.seeds, cfg.eval.batch_size,
                       ctx.device)
        rows = {name: res.seed_row("psnr", name) for name in ("flow", "random")}
        rows_zf = {name: res.seed_row("psnr", f"{name} zero-filled") for name in ("flow", "random")}
        band = int(setup.first.count)
        payload = metrics_payload(
            NAME, "psnr", True, "lines", setup.budgets, rows,
            extra_metrics={"psnr_zero_filled": rows_zf}, band_lines=band, n_locations=setup.operator.n_locations,
            seeds=cfg.eval.seeds, test_images=len(setup.test),
            margins={"flow_vs_random": [f - r for f, r in zip(rows["flow"]["mean"], rows["random"]["mean"])]},
            data={"protocol": f"Shepp-Logan phantom variations {cfg.data.size}x{cfg.data.size} (rotation, scale, "
                              f"shift, contrast, smooth random phase), {band} central lines measured first",
                  "source": str(ctx.data_root / "phantom_skimage" / "phantom.png")},
            notes="PSNR (dB) of the user's ResidualCNN reconstruction; psnr_zero_filled: the same masks without the "
                  "network. Budgets are new lines beyond the central band. margins: flow − random (positive = flow "
                  "better).")
        if ctx.dist.is_main:
            write_results(ctx.results_dir, "metrics", payload, ctx.metadata())
            figures.plot_metric_vs_budget(payload, ctx.results_dir / "psnr_vs_budget.png", ylabel="PSNR (dB)",
                                          xlabel="new k-space lines")
        return payload


EXPERIMENT = OwnReconMRI()

__all__ = ["Config", "SMOKE", "NAME", "OwnReconMRI", "EXPERIMENT", "phantom_images", "NetworkObjective"]
