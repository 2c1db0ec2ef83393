"""MNIST compressed classification (paper §2.6.1 / §3.1, App. A; SPEC §1–4).

Stages (each resumable, each writes ``<run_dir>/<stage>.pt``):
  classifier       MLP trained on random masks at 1–8 % (the task model, frozen afterwards)
  classifier-full  the same MLP trained on all pixels (the ``full`` ceiling)
  unet             reconstruction U-Net on randomly masked noisy digits (its encoder conditions the flow)
  flow             the flow policy, trained against the frozen classifier
Then ``evaluate`` (full test set, several seeds) and ``ablate`` (App. A table).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import load_mnist
from ..errors import ConfigError
from ..flow.policy import FlowPolicy
from ..io import write_json
from ..masks import check_rate, rate_to_budget
from ..metrics import summarize
from ..operators.pixel import PixelOperator
from ..policies.random import RandomPolicy
from ..tasks.base import ClassificationTask, ReconstructionTask
from ..tasks.classifier import MLPClassifier
from ..tasks.unet import ReconUNet
from ..training.checkpoint import load_checkpoint, load_state_into
from ..training.loop import LoopConfig, fit
from . import report
from .common import RunContext, metrics_payload, write_results
from .pixel import (
    FlowTrainConfig,
    MaskedTaskObjective,
    build_flow_model,
    build_flow_objective,
    evaluate_policies,
    flow_batch_fn,
)

NAME = "mnist-classify"
STAGES = ("classifier", "classifier-full", "unet", "flow")


@dataclass
class DataConfig:
    train_subset: int | None = None  # use only the first n training images (smoke runs)
    test_subset: int | None = None  # evaluate on the first n test images


@dataclass
class ClassifierConfig:
    rate_min: float = 1.0
    rate_max: float = 8.0
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=8, batch_size=128, lr=1e-3))


@dataclass
class FullClassifierConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=3, batch_size=128, lr=1e-3))


@dataclass
class UNetConfig:
    rate_min: float = 1.0
    rate_max: float = 50.0
    noise_std: float = 0.05
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    bottleneck: int = 256
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=2, batch_size=64, lr=1e-3))


@dataclass
class EvalConfig:
    rates: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 6.0, 8.0])
    seeds: int = 3
    batch_size: int = 500
    grid_rate: float = 4.0  # budget shown in the mask-grid figure


@dataclass
class AblationConfig:
    gates: list[list[float]] = field(default_factory=lambda: [[1, 1], [10, 1], [20, 1], [30, 1], [40, 1], [30, 2]])
    losses: list[str] = field(default_factory=lambda: ["fm", "task", "both"])
    rates: list[float] = field(default_factory=lambda: [1.0, 4.0, 8.0])
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=1, batch_size=128, lr=1e-3,
                                                                   steps_per_epoch=150))
    test_subset: int | None = 5000


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    classifier_full: FullClassifierConfig = field(default_factory=FullClassifierConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    flow: FlowTrainConfig = field(default_factory=FlowTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)


SMOKE = {
    "data": {"train_subset": 2048, "test_subset": 512},
    "classifier": {"loop": {"epochs": 1, "batch_size": 64}},
    "classifier_full": {"loop": {"epochs": 1, "batch_size": 64}},
    "unet": {"widths": [8, 16, 32], "bottleneck": 32, "loop": {"epochs": 1, "batch_size": 64, "steps_per_epoch": 10}},
    "flow": {"net": {"widths": [8, 16, 16], "bottleneck": 32}, "steps": 4,
             "loop": {"epochs": 1, "batch_size": 64, "steps_per_epoch": 12}},
    "eval": {"seeds": 2, "batch_size": 256, "rates": [1.0, 4.0, 8.0]},
    "ablation": {"gates": [[1, 1], [30, 1]], "losses": ["fm", "both"], "rates": [4.0],
                 "loop": {"steps_per_epoch": 3, "batch_size": 32}, "test_subset": 256},
}


def validate(cfg: Config) -> None:
    for r in [*cfg.eval.rates, *cfg.ablation.rates, cfg.eval.grid_rate]:
        check_rate(r, "evaluation rate")
    for lo, hi, what in [(cfg.classifier.rate_min, cfg.classifier.rate_max, "classifier"),
                         (cfg.unet.rate_min, cfg.unet.rate_max, "unet"),
                         (cfg.flow.rate_min, cfg.flow.rate_max, "flow")]:
        check_rate(lo, f"{what}.rate_min")
        check_rate(hi, f"{what}.rate_max")
        if lo > hi:
            raise ConfigError(f"{what}.rate_min {lo} exceeds {what}.rate_max {hi}")
    if not 0 <= cfg.flow.first_samples < 784:
        raise ConfigError(f"flow.first_samples must be in [0, 784), got {cfg.flow.first_samples}")
    if cfg.eval.seeds < 1:
        raise ConfigError("eval.seeds must be at least 1")


# ----------------------------------------------------------------------------- data & models


def _images(split, subset: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(split) if subset is None else min(subset, len(split))
    return split.images[:n].float().div_(255.0).unsqueeze(1), split.labels[:n]


def load_data(ctx: RunContext, split: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    s = load_mnist(ctx.data_root / "mnist", split)
    subset = ctx.cfg.data.train_subset if split == "train" else ctx.cfg.data.test_subset
    x, y = _images(s, subset)
    return x, y, s.source


OPERATOR = PixelOperator(1, 28, 28)


def make_classifier() -> MLPClassifier:
    return MLPClassifier(784, (256, 128, 128), 10, 0.3)


def make_unet(cfg: UNetConfig) -> ReconUNet:
    return ReconUNet(2, 1, cfg.widths, cfg.bottleneck)


def _signature(ctx: RunContext, stage: str) -> dict:
    c = ctx.cfg
    if stage == "unet":
        return {"experiment": NAME, "widths": list(c.unet.widths), "bottleneck": c.unet.bottleneck}
    if stage == "flow" or stage.startswith("ablation-"):
        return {"experiment": NAME, "flow_widths": list(c.flow.net.widths), "flow_bottleneck": c.flow.net.bottleneck,
                "unet_widths": list(c.unet.widths)}
    return {"experiment": NAME, "model": "mlp-784-256-128-128-10"}


def load_trained(ctx: RunContext, stage: str, module: torch.nn.Module, state_prefix: str = "") -> torch.nn.Module:
    """Load the final weights of a finished stage into ``module`` (the objective's ``model.`` sub-dict)."""
    path = ctx.checkpoint(stage)
    if not path.is_file():
        raise ConfigError(f"{path}: stage '{stage}' has not been trained yet (run `flowcs train {NAME}` first)")
    ckpt = load_checkpoint(path, stage, _signature(ctx, stage))
    if not ckpt.get("done"):
        raise ConfigError(f"{path}: stage '{stage}' did not finish (rerun `flowcs train {NAME} --resume`)")
    state = {k[len(state_prefix):]: v for k, v in ckpt["model"].items() if k.startswith(state_prefix)}
    load_state_into(module, {"model": state}, path)
    return module.to(ctx.device).eval()


def trained_classifier(ctx: RunContext, stage: str = "classifier") -> ClassificationTask:
    return ClassificationTask(load_trained(ctx, stage, make_classifier(), "model.")).freeze()


def trained_unet(ctx: RunContext) -> ReconUNet:
    return load_trained(ctx, "unet", make_unet(ctx.cfg.unet), "model.")


def trained_flow(ctx: RunContext, flow_cfg: FlowTrainConfig | None = None, stage: str = "flow") -> FlowPolicy:
    flow_cfg = flow_cfg or ctx.cfg.flow
    model = build_flow_model(trained_unet(ctx), OPERATOR, flow_cfg.net)
    load_trained(ctx, stage, model, "model.")
    return FlowPolicy(model, OPERATOR.n_locations, steps=flow_cfg.steps)


# ----------------------------------------------------------------------------- training


def train(ctx: RunContext, stages: list[str] | None = None) -> None:
    stages = stages or list(STAGES)
    x, y, source = load_data(ctx, "train")
    if ctx.dist.is_main:
        write_json(ctx.run_dir / "data_sources.json", {"train": source})
    c = ctx.cfg
    for stage in stages:
        torch.manual_seed(ctx.seed)
        if stage in ("classifier", "classifier-full"):
            rates = (c.classifier.rate_min, c.classifier.rate_max) if stage == "classifier" else (100.0, 100.0)
            loop = c.classifier.loop if stage == "classifier" else c.classifier_full.loop
            obj = MaskedTaskObjective(ClassificationTask(make_classifier()), OPERATOR, *rates).to(ctx.device)
            _fit(ctx, stage, obj, loop, x, y)
        elif stage == "unet":
            task = ReconstructionTask(make_unet(c.unet))
            obj = MaskedTaskObjective(task, OPERATOR, c.unet.rate_min, c.unet.rate_max, c.unet.noise_std)
            _fit(ctx, stage, obj.to(ctx.device), c.unet.loop, x, x)
        elif stage == "flow":
            train_flow(ctx, c.flow, x, y, stage)
        else:
            raise ConfigError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")


def train_flow(ctx: RunContext, flow_cfg: FlowTrainConfig, x, y, stage: str = "flow") -> None:
    task = trained_classifier(ctx)
    model = build_flow_model(trained_unet(ctx), OPERATOR, flow_cfg.net)
    obj = build_flow_objective(model, task, OPERATOR, flow_cfg).to(ctx.device)
    fit(obj, flow_batch_fn(x, y, OPERATOR, flow_cfg, ctx.device), x.shape[0], flow_cfg.loop,
        out_dir=ctx.run_dir, name=stage, signature=_signature(ctx, "flow"), seed=ctx.seed, device=ctx.device,
        dist=ctx.dist, resume=ctx.resume, desc=stage)


def _fit(ctx: RunContext, stage: str, obj, loop: LoopConfig, x, y) -> None:
    def batch_fn(idx, _gen):
        return {"x": x[idx].to(ctx.device), "y": y[idx].to(ctx.device)}

    fit(obj, batch_fn, x.shape[0], loop, out_dir=ctx.run_dir, name=stage, signature=_signature(ctx, stage),
        seed=ctx.seed, device=ctx.device, dist=ctx.dist, resume=ctx.resume, desc=stage)


# ----------------------------------------------------------------------------- evaluation


def evaluate(ctx: RunContext) -> dict:
    c = ctx.cfg
    x, y, test_source = load_data(ctx, "test")
    source = {"test": test_source, **_train_source(ctx)}
    task = trained_classifier(ctx)
    flow = trained_flow(ctx)
    n = OPERATOR.n_locations
    budgets = [rate_to_budget(r, n) for r in c.eval.rates]
    k0 = c.flow.first_samples
    rand = RandomPolicy(n)
    policies = {"flow": (flow, True), "random": (rand, False), "random-same-total": (rand, True)}
    grid_budget = rate_to_budget(c.eval.grid_rate, n)
    density = {b: torch.zeros(n) for b in budgets}
    grid: dict = {}

    def on_batch(name, start, masks, acquired):
        if name != "flow" or not ctx.dist.is_main:
            return
        for b, m in masks.items():
            density[b] += (m & ~acquired).float().sum(0).cpu()
        if start == 0 and not grid:
            grid.update(masks=masks[grid_budget][:8].cpu(), acquired=acquired[:8].cpu())

    per_seed = []
    for s in range(c.eval.seeds):
        per_seed.append(evaluate_policies(
            policies, task, OPERATOR, x, y, budgets, k0, seed=ctx.seed * 1000 + s, batch_size=c.eval.batch_size,
            device=ctx.device, on_batch=on_batch if s == 0 else None,
            progress=lambda it, s=s: tqdm(it, desc=f"evaluate seed {s}", leave=False)))
    rows = {name: _row(per_seed, name, budgets) for name in policies}
    full_task = trained_classifier(ctx, "classifier-full")
    with torch.inference_mode():
        full_acc = torch.cat([full_task.score(full_task.predict(x[i:i + 2000].to(ctx.device), None), y[i:i + 2000])
                              for i in range(0, x.shape[0], 2000)]).float().mean().item()
    rows["full"] = {"mean": [full_acc] * len(budgets), "std": [0.0] * len(budgets), "n": int(x.shape[0]),
                    "note": "same MLP trained and tested on all 784 pixels"}
    payload = metrics_payload(
        NAME, "accuracy", True, "percent", list(c.eval.rates), rows,
        budget_pixels=budgets, first_samples=k0, total_pixels=[b + k0 for b in budgets],
        seeds=c.eval.seeds, test_images=int(x.shape[0]), data=source,
        notes=("flow and random-same-total see the k0 random first-measurement pixels plus the policy budget "
               "(total = budget + k0); random sees only the budget, as in the paper. Classifier trained on "
               "random masks at 1-8 %, frozen for every policy. std = across evaluation seeds."),
    )
    if ctx.dist.is_main:
        write_results(ctx.results_dir, "metrics", payload, ctx.metadata(data_source=source), table_scale=100)
        report.plot_metric_vs_budget(payload, ctx.results_dir / "accuracy_vs_rate.png", scale=100,
                                     ylabel="accuracy (%)", xlabel="policy budget (% of pixels)")
        n_test = x.shape[0]
        report.plot_density(
            {f"{r:g}%": (density[b] / n_test).reshape(28, 28) for r, b in zip(c.eval.rates, budgets)},
            ctx.results_dir / "density.png", title="flow: probability that a pixel is chosen (new pixels only)")
        report.plot_mask_grid(x[:8, 0], grid["acquired"].reshape(-1, 28, 28), grid["masks"].reshape(-1, 28, 28),
                              ctx.results_dir / "masks.png",
                              title=f"flow masks at {c.eval.grid_rate:g}% (+{k0} first pixels)")
    return payload


def _train_source(ctx: RunContext) -> dict:
    path = ctx.run_dir / "data_sources.json"
    return json.loads(path.read_text()) if path.is_file() else {"train": "unknown (data_sources.json missing)"}


def _row(per_seed: list[dict], name: str, budgets: list[int]) -> dict:
    means, stds, ci = [], [], []
    for b in budgets:
        seed_means = torch.stack([run[name][b].float().mean() for run in per_seed])
        means.append(float(seed_means.mean()))
        stds.append(float(seed_means.std(unbiased=False)) if len(per_seed) > 1 else 0.0)
        ci.append(list(summarize(torch.cat([run[name][b] for run in per_seed]))["ci95"]))
    return {"mean": means, "std": stds, "ci95_pooled": ci, "n": int(per_seed[0][name][budgets[0]].numel())}


# ----------------------------------------------------------------------------- ablation


def ablate(ctx: RunContext) -> dict:
    """Paper App. A: gate (a, b) grid and FM-only / task-only / both, short runs from the same frozen models."""
    c = ctx.cfg
    xtr, ytr, _ = load_data(ctx, "train")
    xte, yte, source = load_data(ctx, "test")
    if c.ablation.test_subset:
        xte, yte = xte[:c.ablation.test_subset], yte[:c.ablation.test_subset]
    task = trained_classifier(ctx)
    n = OPERATOR.n_locations
    budgets = [rate_to_budget(r, n) for r in c.ablation.rates]
    variants = [(f"gate a={a:g} b={b:g}", {"gate_a": float(a), "gate_b": float(b), "loss": "both"})
                for a, b in c.ablation.gates]
    variants += [(f"loss={mode}", {"loss": mode}) for mode in c.ablation.losses if mode != "both"]
    rows = {}
    for label, changes in variants:
        flow_cfg = _replace(c.flow, loop=c.ablation.loop, **changes)
        stage = "ablation-" + label.replace(" ", "_").replace("=", "")
        train_flow(ctx, flow_cfg, xtr, ytr, stage)
        policy = trained_flow(ctx, flow_cfg, stage)
        res = evaluate_policies({"flow": (policy, True)}, task, OPERATOR, xte, yte, budgets, flow_cfg.first_samples,
                                seed=ctx.seed * 1000, batch_size=c.eval.batch_size, device=ctx.device)
        rows[label] = {"mean": [float(res["flow"][b].float().mean()) for b in budgets], "n": int(xte.shape[0]),
                       **changes}
    payload = metrics_payload(NAME + "-ablation", "accuracy", True, "percent", list(c.ablation.rates), rows,
                              budget_pixels=budgets, first_samples=c.flow.first_samples, data=source,
                              training=f"each variant: {c.ablation.loop.epochs} epoch(s) x "
                                       f"{c.ablation.loop.steps_per_epoch} steps of batch {c.ablation.loop.batch_size}",
                              notes="loss=both uses the Kendall weighting; gate rows all use loss=both.")
    if ctx.dist.is_main:
        write_results(ctx.results_dir, "ablation", payload, ctx.metadata(data_source=source), table_scale=100)
    return payload


def _replace(flow_cfg: FlowTrainConfig, **changes) -> FlowTrainConfig:
    return dataclasses.replace(flow_cfg, **changes)


def default_results_dir() -> Path:
    return Path("results") / NAME


__all__ = ["Config", "SMOKE", "NAME", "STAGES", "validate", "train", "evaluate", "ablate"]
