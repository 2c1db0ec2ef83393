"""An experiment as an object: its configuration, its stages, and the :class:`~flowcs.evaluation.Setup` it hands
to evaluation, ``flowcs compare``, the benchmarks and export.

Subclasses define :attr:`Experiment.config_class` (a dataclass of defaults: the one source of every default),
:attr:`Experiment.smoke` (the ``--smoke`` preset, merged over the defaults; it holds the comparison's smoke
settings too, under ``compare``), :attr:`Experiment.stages`, and implement :meth:`train_stage`, :meth:`setup`
and :meth:`evaluate`. Register an instance with :func:`flowcs.registry.register_experiment` (built-in
experiments are registered the same way).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from ..errors import ConfigError
from ..evaluation.draws import NamedDraws
from ..evaluation.loop import Entry
from ..evaluation.setup import Setup
from ..policies.base import Policy
from .context import RunContext

__all__ = ["Experiment", "ModuleExperiment"]


class Experiment:
    """One named experiment (data × operator × task × policies). See the module doc."""

    name: str = "experiment"
    config_class: type = object
    stages: tuple[str, ...] = ()
    smoke: dict = {}

    def default_config(self) -> Any:
        return self.config_class()

    def validate(self, cfg) -> None:
        """Raise a one-line :class:`ConfigError` for values that would fail only after work has started."""

    # --- training

    def training_data(self, ctx: RunContext) -> Any:
        """Whatever every stage trains on (loaded once per ``train`` call)."""
        return None

    def train_stage(self, ctx: RunContext, stage: str, data: Any) -> None:
        raise NotImplementedError

    def train(self, ctx: RunContext, stages: list[str] | None = None) -> None:
        """Train ``stages`` (default all) in the experiment's order; each stage is resumable."""
        wanted = list(stages or self.stages)
        unknown = [s for s in wanted if s not in self.stages]
        if unknown:
            raise ConfigError(f"unknown stage {unknown[0]!r} for {self.name}; choose from {', '.join(self.stages)}")
        data = self.training_data(ctx)
        for stage in self.stages:
            if stage in wanted:
                torch.manual_seed(ctx.seed)
                self.train_stage(ctx, stage, data)

    # --- what the evaluation sees

    def setup(self, ctx: RunContext, split: str | None = None, train: bool = False) -> Setup:
        """The frozen task, operator, first measurement, condition, budgets, metrics and data of a trained run.

        ``split`` defaults to the configured evaluation split; ``train`` also provides training batches (peers).
        """
        raise ConfigError(f"experiment {self.name!r} provides no setup() (compare, bench and export need one)")

    def training_sample(self, ctx: RunContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the first ``n`` training images, as the task's loss sees them (no augmentation)."""
        raise ConfigError(f"experiment {self.name!r} provides no training_sample()")

    def flow_policy(self, ctx: RunContext) -> Policy:
        """The trained flow policy of the run."""
        raise ConfigError(f"experiment {self.name!r} has no flow policy")

    def draws(self, ctx: RunContext) -> NamedDraws:
        """The evaluation's random draws: derived per sample from the run seed and each policy's name."""
        return NamedDraws(ctx.seed)

    def entries(self, ctx: RunContext, setup: Setup) -> dict[str, Entry]:
        """The experiment's own policies (flow and its baselines), as evaluated and as compared."""
        raise ConfigError(f"experiment {self.name!r} defines no policies to compare")

    def evaluate(self, ctx: RunContext) -> dict:
        raise NotImplementedError

    def ablate(self, ctx: RunContext) -> dict:
        raise ConfigError(f"{self.name} has no ablation (the gate/loss ablation is part of mnist-classify)")


class ModuleExperiment(Experiment):
    """A plug-in experiment written as a module (``Config``, ``SMOKE``, ``STAGES``, ``validate``, ``train``,
    ``evaluate`` and optionally ``ablate``): the form flowcs accepted before experiments were objects."""

    API = ("Config", "SMOKE", "STAGES", "validate", "train", "evaluate")

    def __init__(self, name: str, module: ModuleType):
        missing = [attr for attr in self.API if not hasattr(module, attr)]
        if missing:
            raise ConfigError(f"experiment {name!r} (module {module.__name__}) does not define {', '.join(missing)}; "
                              f"an experiment module needs {', '.join(self.API)}")
        self.name, self.module = name, module
        self.config_class, self.smoke, self.stages = module.Config, module.SMOKE, tuple(module.STAGES)

    def validate(self, cfg) -> None:
        self.module.validate(cfg)

    def train(self, ctx, stages=None) -> None:
        unknown = [s for s in stages or [] if s not in self.stages]
        if unknown:
            raise ConfigError(f"unknown stage {unknown[0]!r} for {self.name}; choose from {', '.join(self.stages)}")
        self.module.train(ctx, stages)

    def evaluate(self, ctx) -> dict:
        return self.module.evaluate(ctx)

    def ablate(self, ctx) -> dict:
        if not hasattr(self.module, "ablate"):
            return super().ablate(ctx)
        return self.module.ablate(ctx)
