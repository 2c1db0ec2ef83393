"""What an experiment hands to evaluation, comparison, benchmarking and export: one :class:`Setup`.

An experiment (``flowcs.experiments``) builds it from its configuration and its trained run directory; nothing
downstream reaches into the experiment's own modules. The setup says how to measure (operator, first
measurement, condition, noise), what judges a mask (the frozen task and the per-sample metrics), on which
samples (the test split, optionally the training data for peers) and at which budgets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..acquisition import Condition, FirstMeasurement
from ..operators.base import Operator
from ..tasks.base import Task

__all__ = ["Setup", "Split", "TrainData", "MetricFn", "Reader"]

#: per-sample metric ``fn(prediction, target, rows) -> (B,)``; ``rows`` are the samples' indices in the split
MetricFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: ``reader(zero_filled, mask_image) -> prediction``: a task model reading a measurement
Reader = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Split:
    """Evaluation samples: inputs ``x`` (what the operator measures) and targets ``y`` (what metrics compare to)."""

    x: torch.Tensor
    y: torch.Tensor
    names: list[str] | None = None  # per-sample names (MRI: image names)
    volumes: list[str] | None = None  # per-sample volume (MRI), for per-volume statistics
    source: Any = None  # description for the results files
    split: str = "test"  # which split these samples are ("val" for choices, "test" for reported results)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def head(self, n: int | None) -> Split:
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        cut = slice(0, n)
        return Split(self.x[cut], self.y[cut], self.names[cut] if self.names else None,
                     self.volumes[cut] if self.volumes else None, self.source, self.split)


@dataclass
class TrainData:
    """Training batches for peers: ``batch(indices, generator) -> (x, y)`` over ``n_items`` items, ``y`` being
    what the task's *loss* compares with (labels, images; for MRI the complex image)."""

    n_items: int
    batch: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    source: Any = None

    @classmethod
    def from_tensors(cls, x: torch.Tensor, y: torch.Tensor, device, source: Any = None) -> TrainData:
        """Batches of in-memory tensors, moved to ``device``."""
        return cls(int(x.shape[0]), lambda idx, _gen: (x[idx].to(device), y[idx].to(device)), source)


@dataclass
class Setup:
    """Everything needed to measure, choose, reconstruct and score one experiment's samples."""

    experiment: str
    operator: Operator
    task: Task  # frozen
    first: FirstMeasurement
    condition: Condition
    test: Split
    budgets: list[int]  # locations chosen by a policy, per reported budget
    budget_values: list  # the same budgets as reported (percent / pixels / acceleration)
    budget_unit: str
    metrics: dict[str, MetricFn]
    primary: str
    higher_is_better: bool
    noisy: bool = False  # measurement noise (drawn once per sample and seed)
    train: TrainData | None = None
    task_files: list = field(default_factory=list)  # checkpoints of the frozen task (hashed by compare)
    flow_rates: tuple[float, float] = (0.0, 0.0)  # the flow's training rate range, percent of N
    table_scale: float = 1.0  # 100 for accuracy tables in percent
    prior_shift_scale: tuple[float, float] = (0.5, 0.5)  # ADS prior's image normalisation
    protocol: str = ""
    table_metrics: list[str] | None = None  # metrics shown in comparison tables (None: all)
    extras: dict = field(default_factory=dict)  # experiment-specific values for its own rows and figures

    def score(self, pred: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every metric of ``pred`` against ``y`` per sample."""
        return {name: fn(pred, y, rows) for name, fn in self.metrics.items()}
