"""``flowcs ablate``: short flow trainings that differ in one setting each, from the same frozen models.

The paper's App. A table: the gate steepness κ(t) = a·t^b over a grid of (a, b), and the loss (FM only /
task only / both with Kendall weighting). Every variant trains ``ablation.loop`` steps as its own stage
``ablation-<label>`` and is evaluated on the first ``ablation.test_subset`` images of the experiment's
evaluation split; the table compares variants with each other, not with the main run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from ..evaluation.loop import Entry, evaluate
from ..evaluation.tables import metrics_payload, write_results
from ..masks import rate_to_budget
from ..training.loop import LoopConfig

__all__ = ["AblationConfig", "run_flow_ablation"]


@dataclass
class AblationConfig:
    gates: list[list[float]] = field(default_factory=lambda: [[1, 1], [10, 1], [20, 1], [30, 1], [40, 1], [30, 2]])
    losses: list[str] = field(default_factory=lambda: ["fm", "task", "both"])
    rates: list[float] = field(default_factory=lambda: [1.0, 4.0, 8.0])
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=1, batch_size=128, lr=1e-3,
                                                                   steps_per_epoch=60))
    test_subset: int | None = 1000


def run_flow_ablation(experiment, ctx, train_flow: Callable) -> dict:
    """Train and evaluate every variant; write ``ablation.json`` / ``.md`` (``train_flow(flow_cfg, stage)``)."""
    c = ctx.cfg
    a = c.ablation
    setup = experiment.setup(ctx)
    setup.test = setup.test.head(a.test_subset)
    n = setup.operator.n_locations
    budgets = [rate_to_budget(r, n) for r in a.rates]
    variants = [(f"gate a={ga:g} b={gb:g}", {"gate_a": float(ga), "gate_b": float(gb), "loss": "both"})
                for ga, gb in a.gates]
    variants += [(f"loss={mode}", {"loss": mode}) for mode in a.losses if mode != "both"]
    rows = {}
    for label, changes in variants:
        flow_cfg = dataclasses.replace(c.flow, loop=a.loop, **changes)
        stage = "ablation-" + label.replace(" ", "_").replace("=", "")
        train_flow(flow_cfg, stage)
        policy = experiment.flow_policy(ctx, flow_cfg, stage)
        res = evaluate(setup, {"flow": Entry(policy)}, experiment.draws(ctx), 1, c.eval.batch_size,
                       ctx.device, budgets=budgets, desc=f"ablation {label}")
        rows[label] = {"mean": [float(res.values[setup.primary]["flow"][b][0].mean()) for b in budgets],
                       "n": len(setup.test), **changes}
    loop = a.loop
    payload = metrics_payload(f"{experiment.name}-ablation", setup.primary, setup.higher_is_better, "percent",
                              list(a.rates), rows, budget_pixels=budgets, first_samples=setup.first.count,
                              data=setup.test.source,
                              training=f"each variant: {loop.epochs} epoch(s) x {loop.steps_per_epoch} steps of "
                                       f"batch {loop.batch_size}",
                              notes="loss=both uses the Kendall weighting; gate rows all use loss=both.")
    if ctx.dist.is_main:
        write_results(ctx.results_dir, "ablation", payload, ctx.metadata(data_source=setup.test.source),
                      table_scale=setup.table_scale)
    return payload
