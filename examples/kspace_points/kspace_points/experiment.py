"""Experiment ``kspace-points``: flow policy vs random policy for 2-D k-space point sampling of MNIST digits.

Protocol: every digit (downsampled to ``data.size``², real image in the first of two channels) is first
measured on the central ``first_block``² k-space block; a policy then picks ``budget`` more k-space points.
The task is the zero-filled reconstruction ``F^H(M ⊙ F x)`` (a task with no trained model: the
:class:`ZeroFilledTask`), scored by the normalised squared error (NMSE, lower is better). The flow policy is
the flowcs one (FM loss + gated task loss, Kendall weighting, Euler sampling); only the geometry
(:class:`~kspace_points.geometry.KSpacePointOperator`), the small velocity MLP and the condition encoder are
defined here.

Run it (from the repository root)::

    PYTHONPATH=examples/kspace_points FLOWCS_PLUGINS=kspace_points \\
        flowcs run kspace-points --smoke --config examples/kspace_points/config.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from flowcs.acquisition import BandFirst, Condition
from flowcs.data import load_mnist
from flowcs.errors import ConfigError
from flowcs.evaluation import Entry, MaskEvent, Setup, Split, evaluate, figures
from flowcs.evaluation.draws import NamedDraws
from flowcs.evaluation.tables import metrics_payload, write_results
from flowcs.experiments.base import Experiment
from flowcs.flow.model import FlowModel, FrozenEncoder
from flowcs.flow.nets.mlp import MRIVelocityMLP, PooledCondition
from flowcs.flow.objective import FlowTaskObjective
from flowcs.flow.policy import FlowPolicy
from flowcs.flow.targets import TargetEstimator
from flowcs.masks import rate_to_budget
from flowcs.policies import RandomPolicy
from flowcs.registry import get_operator
from flowcs.tasks.base import Task
from flowcs.training.loop import LoopConfig
from flowcs.training.stages import fit_stage, load_stage

from .geometry import central_block

NAME = "kspace-points"


@dataclass
class DataConfig:
    size: int = 14                  # digits are average-pooled from 28×28 to size×size (28 / size must be whole)
    train_images: int = 4096
    test_images: int = 1000


@dataclass
class FlowConfig:
    first_block: int = 3            # side of the central k-space block measured first
    rate_min: float = 3.0           # policy budget during training, % of the N points
    rate_max: float = 15.0
    target: str = "saliency"
    loss: str = "both"
    gate_a: float = 30.0
    gate_b: float = 1.0
    steps: int = 10                 # Euler steps at sampling time
    hidden: int = 256
    layers: int = 2
    pool: int = 7                   # condition = zero-filled first measurement average-pooled to pool×pool
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=4, batch_size=64, lr=2e-3))


@dataclass
class EvalConfig:
    budgets: list[int] = field(default_factory=lambda: [5, 10, 20, 30])   # new k-space points per image
    seeds: int = 2
    batch_size: int = 250


@dataclass
class Config:
    geometry: str = "kspace-points"   # an operator name from flowcs.registry
    data: DataConfig = field(default_factory=DataConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SMOKE = {"data": {"train_images": 1024, "test_images": 200},
         "flow": {"loop": {"epochs": 3, "batch_size": 32}},
         "eval": {"seeds": 1, "budgets": [5, 10, 20]}}


# ----------------------------------------------------------------------------- the pieces


class ZeroFilledTask(Task):
    """Zero-filled reconstruction: no trained model, loss = squared error, metric = NMSE per image."""

    name = "zero-filled"
    metric = "nmse"
    higher_is_better = False

    def __init__(self):
        super().__init__(nn.Identity())

    def predict(self, zero_filled, mask_image):
        return zero_filled

    def loss(self, pred, target, reduction="mean"):
        per = (pred - target).pow(2).flatten(1).sum(1)
        return per.mean() if reduction == "mean" else per

    def score(self, pred, target):
        return (pred - target).pow(2).flatten(1).sum(1) / target.pow(2).flatten(1).sum(1).clamp_min(1e-12)


class ZeroFilledImage(Condition):
    """The policy sees the zero-filled image of what was measured (the flow's encoder pools it)."""

    def __call__(self, operator, zero_filled, acquired):
        return zero_filled


def operator_for(cfg: Config):
    return get_operator(cfg.geometry)(cfg.data.size, cfg.data.size)


def build_flow_model(cfg: Config, n_locations: int) -> FlowModel:
    f = cfg.flow
    velocity = MRIVelocityMLP(n_locations, 2 * f.pool * f.pool, f.hidden, f.layers, time_dim=32)
    return FlowModel(FrozenEncoder(PooledCondition(f.pool)), velocity)


def first_block(cfg: Config) -> BandFirst:
    s = cfg.data.size
    return BandFirst(central_block(s, s, cfg.flow.first_block), "central k-space block")


# ----------------------------------------------------------------------------- the experiment


class KSpacePoints(Experiment):
    name = NAME
    config_class = Config
    stages = ("flow",)
    smoke = SMOKE

    def validate(self, cfg: Config) -> None:
        if cfg.data.size < 4 or 28 % cfg.data.size:
            raise ConfigError(f"data.size must divide 28 and be at least 4, got {cfg.data.size}")
        n = cfg.data.size ** 2
        if max(cfg.eval.budgets) + cfg.flow.first_block ** 2 > n:
            raise ConfigError(f"eval.budgets up to {max(cfg.eval.budgets)} plus the first block exceed the {n} points")
        if cfg.eval.seeds < 1:
            raise ConfigError(f"eval.seeds must be at least 1, got {cfg.eval.seeds}")

    def signature(self, cfg: Config) -> dict:
        f = cfg.flow
        return {"experiment": NAME, "size": cfg.data.size, "hidden": f.hidden, "layers": f.layers, "pool": f.pool,
                "geometry": cfg.geometry}

    def load_digits(self, ctx, split: str) -> tuple[torch.Tensor, str]:
        """(B, 2, s, s) digits in [0, 1] (imaginary channel 0) and the file they came from."""
        c = ctx.cfg.data
        s = load_mnist(ctx.data_root / "mnist", split)
        n = min(c.train_images if split == "train" else c.test_images, len(s))
        x = F.avg_pool2d(s.images[:n].float().div(255.0).unsqueeze(1), 28 // c.size)
        return torch.cat([x, torch.zeros_like(x)], dim=1), s.source

    def training_data(self, ctx):
        x, source = self.load_digits(ctx, "train")
        ctx.record_data_sources({"train": source})
        return x

    def train_stage(self, ctx, stage: str, x: torch.Tensor) -> None:
        cfg, f = ctx.cfg, ctx.cfg.flow
        op, first, condition = operator_for(cfg), first_block(cfg), ZeroFilledImage()
        task = ZeroFilledTask().freeze()
        objective = FlowTaskObjective(build_flow_model(cfg, op.n_locations), task, op,
                                      TargetEstimator(f.target, task, op), f.loss, f.gate_a, f.gate_b).to(ctx.device)

        def batch_fn(idx: torch.Tensor, gen: torch.Generator) -> dict:
            xb = x[idx].to(ctx.device)
            acquired = first.acquired(xb.shape[0], op.n_locations, None, xb.device)
            cond = condition(op, op.zero_filled(op.measure(xb, acquired), acquired), acquired)
            rate = f.rate_min + (f.rate_max - f.rate_min) * float(torch.rand(1, generator=gen))
            return {"x": xb, "y": xb, "condition": cond, "acquired": acquired,
                    "k": rate_to_budget(rate, op.n_locations)}

        fit_stage(ctx, "flow", objective, f.loop, batch_fn, x.shape[0], self.signature(cfg))

    def flow_policy(self, ctx, flow_cfg=None, stage: str = "flow") -> FlowPolicy:
        op = operator_for(ctx.cfg)
        model = load_stage(ctx, stage, build_flow_model(ctx.cfg, op.n_locations), self.signature(ctx.cfg))
        return FlowPolicy(model, op.n_locations, steps=ctx.cfg.flow.steps)

    def setup(self, ctx, split=None, train=False) -> Setup:
        cfg = ctx.cfg
        op, task = operator_for(cfg), ZeroFilledTask()
        x, source = self.load_digits(ctx, "test")
        x = x.to(ctx.device)
        return Setup(experiment=NAME, operator=op, task=task, first=first_block(cfg), condition=ZeroFilledImage(),
                     test=Split(x, x, source=source), budgets=list(cfg.eval.budgets),
                     budget_values=list(cfg.eval.budgets), budget_unit="points",
                     metrics={"nmse": lambda pred, y, rows: task.score(pred, y)}, primary="nmse",
                     higher_is_better=False)

    def entries(self, ctx, setup: Setup) -> dict[str, Entry]:
        return {"flow": Entry(self.flow_policy(ctx)), "random": Entry(RandomPolicy(setup.operator.n_locations))}

    def evaluate(self, ctx) -> dict:
        cfg = ctx.cfg
        setup = self.setup(ctx)
        budgets, n = setup.budgets, setup.operator.n_locations
        density = torch.zeros(n)

        def on_masks(ev: MaskEvent) -> None:  # where the flow measures at the largest budget (first seed)
            if ev.name == "flow" and ev.seed_index == 0:
                density.add_((ev.masks[budgets[-1]] & ~ev.acquired).float().sum(0).cpu())

        res = evaluate(setup, self.entries(ctx, setup), NamedDraws(ctx.seed), cfg.eval.seeds, cfg.eval.batch_size,
                       ctx.device, on_masks=on_masks)
        rows = {name: res.seed_row("nmse", name) for name in ("flow", "random")}
        payload = metrics_payload(
            NAME, "nmse", False, "points", budgets, rows,
            geometry=cfg.geometry, first_block=cfg.flow.first_block, n_locations=n,
            seeds=cfg.eval.seeds, test_images=len(setup.test),
            margins={"flow_vs_random": [r - f for f, r in zip(rows["flow"]["mean"], rows["random"]["mean"])]},
            data={"test": setup.test.source, **ctx.recorded_data_sources(),
                  "protocol": f"MNIST digits average-pooled to {cfg.data.size}x{cfg.data.size}; central "
                              f"{cfg.flow.first_block}x{cfg.flow.first_block} k-space block measured first"},
            notes="Zero-filled reconstruction of k-space points; NMSE per image (lower is better). Both policies "
                  "start from the central block; budgets are new points. margins: random − flow (positive = flow "
                  "better).")
        if ctx.dist.is_main:
            out = ctx.results_dir
            write_results(out, "metrics", payload, ctx.metadata())
            figures.plot_metric_vs_budget(payload, out / "nmse_vs_budget.png", ylabel="NMSE (lower is better)",
                                          xlabel="new k-space points")
            figures.plot_density({f"{budgets[-1]} points": (density / len(setup.test)).reshape(cfg.data.size, -1)},
                                 out / "density.png", title="flow: probability that a k-space point is chosen")
        return payload


EXPERIMENT = KSpacePoints()

__all__ = ["Config", "SMOKE", "NAME", "KSpacePoints", "EXPERIMENT", "ZeroFilledTask", "ZeroFilledImage"]
