"""``flowcs ablate``: flow trainings that differ in their objective, scored on the validation split.

Two tables in one ``ablation.json``:

* the paper's App. A rows: the gate steepness κ(t) = a·t^b over a grid of (a, b), Kendall-weighted FM + task loss;
* the grid of this project's objective choices: acquisition rounds × target estimator × loss mode
  (``target: none`` only with ``loss: task``), and the ``joint`` objective at every rounds value (on the
  experiment's other settings, its prior included: candidates for the main setting);
* MRI: the strength of the centre prior (``priors``), on top of the experiment's own flow settings. The grid rows
  then run without the prior, so that they show what the flow learns by itself.

Every variant trains ``ablation.loop`` steps as its own stage ``ablation-<label>`` from the same frozen task and
encoder, and is evaluated on the first ``ablation.val_images`` images of the **validation** split (never the
test split: the winner of this table is what the experiment's defaults use). The table compares variants with
each other; its training is shorter than the main run's.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError, ConfigError
from ..evaluation.loop import Entry, evaluate
from ..evaluation.tables import metrics_payload, write_results
from ..masks import rate_to_budget
from ..training.loop import LoopConfig

__all__ = ["AblationConfig", "ablation_variants", "run_flow_ablation", "target_quality"]


@dataclass
class AblationConfig:
    gates: list[list[float]] = field(default_factory=lambda: [[1, 1], [10, 1], [20, 1], [30, 1], [40, 1], [30, 2]])
    rounds: list[int] = field(default_factory=lambda: [1, 4])
    targets: list[str] = field(default_factory=lambda: ["saliency", "greedy", "self", "none"])
    losses: list[str] = field(default_factory=lambda: ["task", "both"])
    joint: bool = True  # also flow.objective=joint (task loss, no target) at every ``rounds`` value
    priors: list[float] = field(default_factory=list)  # MRI: flow.center_prior values (rows on the main settings)
    rates: list[float] = field(default_factory=lambda: [1.0, 4.0, 8.0])  # pixel experiments (MRI: its budget)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=1, batch_size=128, lr=1e-3,
                                                                   steps_per_epoch=60))
    val_images: int | None = 1000
    target_images: int = 256  # training images on which every target estimator's own masks are scored


def _label(changes: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items())


def ablation_variants(a: AblationConfig) -> list[tuple[str, dict]]:
    """(label, flow-config changes) of every variant: the gate rows, rounds × target × loss, the joint rows."""
    gate = {"objective": "gate"}  # gate and grid rows are gate objectives whatever the main setting is
    # the paper's App. A rows: Kendall FM + task on saliency targets, also when the main setting has no target
    out = [(f"gate a={ga:g} b={gb:g}",
            {**gate, "gate_a": float(ga), "gate_b": float(gb), "target": "saliency", "loss": "both"})
           for ga, gb in a.gates]
    for rounds, target, loss in itertools.product(a.rounds, a.targets, a.losses):
        if target == "none" and loss != "task":
            continue  # no flow-matching target without one
        changes = {"rounds": int(rounds), "target": target, "loss": loss}
        if a.priors:
            changes["center_prior"] = 0.0
        out.append((_label(changes), {**gate, **changes}))
    if a.joint:
        joint = [{"objective": "joint", "rounds": int(r), "target": "none", "loss": "task"} for r in a.rounds]
        out += [(_label(c), c) for c in joint]  # candidates for the main setting: the experiment's prior kept
    out += [(_label({"center_prior": float(p)}), {"center_prior": float(p)}) for p in a.priors]
    return out


def run_flow_ablation(experiment, ctx, train_flow: Callable) -> dict:
    """Train and evaluate every variant on validation images; write ``ablation.json`` / ``.md``.

    ``train_flow(flow_cfg, stage)`` trains one variant; ``experiment.flow_policy(ctx, flow_cfg, stage)`` loads it.
    """
    c = ctx.cfg
    a = c.ablation
    setup = experiment.setup(ctx, split="val")  # choices are scored on validation images, never on test
    setup.test = setup.test.head(a.val_images)
    pixel = setup.budget_unit != "acceleration"
    budgets = [rate_to_budget(r, setup.operator.n_locations) for r in a.rates] if pixel else setup.budgets
    values = list(a.rates) if pixel else setup.budget_values
    rows = {}
    for label, changes in ablation_variants(a):
        flow_cfg = dataclasses.replace(c.flow, loop=a.loop, **changes)
        stage = "ablation-" + label.replace(" ", "_").replace("=", "")
        # every variant starts from the same initial weights, whether the variants before it were trained in this
        # process (which moves the global RNG) or loaded from a resumed run directory (which does not)
        torch.manual_seed(ctx.seed)
        train_flow(flow_cfg, stage)
        policy = experiment.flow_policy(ctx, flow_cfg, stage)
        res = evaluate(setup, {"flow": Entry(policy)}, experiment.draws(ctx), 1, c.eval.batch_size, ctx.device,
                       budgets=budgets, desc=f"ablation {label}")
        rows[label] = {"mean": [float(res.values[setup.primary]["flow"][b][0].mean()) for b in budgets],
                       "n": len(setup.test), **changes}
    targets = target_quality(experiment, ctx, setup, budgets, a.target_images)
    sign = 1.0 if setup.higher_is_better else -1.0
    winner = max(rows, key=lambda r: sign * sum(rows[r]["mean"]) / len(budgets))
    loop = a.loop
    payload = metrics_payload(f"{experiment.name}-ablation", setup.primary, setup.higher_is_better,
                              setup.budget_unit if not pixel else "percent", values, rows,
                              budget_locations=budgets, first_locations=setup.first.count, split="val",
                              selected_on="val", winner=winner, targets=targets, data=setup.test.source,
                              training=f"each variant: {loop.epochs} epoch(s) x {loop.steps_per_epoch} steps of "
                                       f"batch {loop.batch_size}",
                              notes="Validation images only. Gate rows use loss=both (Kendall weighting) and the "
                                    "experiment's other flow settings; the grid rows vary rounds x target x loss "
                                    "(and flow.objective=joint per rounds value, which keeps the prior) "
                                    "with the gate of the experiment (and no centre prior where prior rows "
                                    "exist); prior rows change only flow.center_prior. winner = best mean over "
                                    "the budgets.")
    if ctx.dist.is_main:
        write_results(ctx.results_dir, "ablation", payload, ctx.metadata(data_source=setup.test.source),
                      table_scale=setup.table_scale)
    return payload


@torch.inference_mode()
def _scores_of(setup, x, y, masks, rows) -> dict[str, float]:
    op = setup.operator
    zf = op.zero_filled(op.measure(x, masks), masks)
    pred = setup.task.predict(zf, op.mask_to_image(masks))
    out = {m: float(fn(pred, y if setup.budget_unit != "acceleration" else _magnitude(y), rows).double().mean())
           for m, fn in setup.metrics.items() if not m.endswith("_vol")}
    out["task_loss"] = float(setup.task.loss(pred, y, reduction="none").double().mean())
    return out


def _magnitude(y):
    from ..operators.fft import complex_abs

    return complex_abs(y)[:, 0]


def target_quality(experiment, ctx, setup, budgets: list[int], n_images: int) -> dict:
    """How good are the masks each target estimator proposes, on training images (noiseless measurements)?

    For every estimator (its own masks, computed with the true images: they are *targets*, not policies), the
    trained flow policy of the run and, for MRI, the low-frequency block: the mean task loss and metrics of the
    mask at each budget. A target worse than what the policy already finds cannot teach it anything.
    """
    from ..flow.targets import TargetEstimator
    from ..policies.cartesian import LowFrequencyPolicy

    x, y = experiment.training_sample(ctx, n_images)
    x, y = x.to(ctx.device), y.to(ctx.device)
    n, op = x.shape[0], setup.operator
    rows = torch.arange(n)
    gen = torch.Generator().manual_seed(ctx.seed * 7_919 + 3)
    acquired = setup.first.acquired(n, op.n_locations, gen, x.device)
    f = ctx.cfg.flow
    out: dict = {"images": n, "split": "train", "budgets": budgets, "estimators": {}}
    for kind in ("saliency", "greedy", "best-of-r", "none"):
        est = TargetEstimator(kind, setup.task, op, f.best_of_r, getattr(f, "greedy_chunks", 4))
        per = [_scores_of(setup, x, y, est(x, y, b, acquired, gen), rows) for b in budgets]
        out["estimators"][kind] = {k: [p[k] for p in per] for k in per[0]}
    cond = setup.condition(op, op.zero_filled(op.measure(x, acquired), acquired), acquired)
    try:
        flow = experiment.flow_policy(ctx)
        masks = flow.propose_many(cond, budgets, acquired, gen, observe=lambda m: op.zero_filled(op.measure(x, m), m))
        per = [_scores_of(setup, x, y, masks[b], rows) for b in budgets]
        out["estimators"]["trained flow policy"] = {k: [p[k] for p in per] for k in per[0]}
    except (ConfigError, CheckpointError):
        pass  # no trained main flow in this run directory, or one of other settings (its signature differs)
    if setup.budget_unit == "acceleration":
        block = [LowFrequencyPolicy(op.n_locations).propose(cond, b, acquired) for b in budgets]
        per = [_scores_of(setup, x, y, m, rows) for m in block]
        out["estimators"]["low-frequency block"] = {k: [p[k] for p in per] for k in per[0]}
    return out
