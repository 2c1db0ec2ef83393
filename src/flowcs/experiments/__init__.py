"""Named experiments (data × operator × task × policies): :class:`~flowcs.experiments.base.Experiment` objects
registered in :mod:`flowcs.registry`, and the run context every command builds (:func:`build_context`)."""

from __future__ import annotations

from types import ModuleType

from ..errors import ConfigError
from ..registry import available, get_experiment_target
from .base import Experiment, ModuleExperiment
from .context import RunContext, build_context, record_run

__all__ = ["Experiment", "RunContext", "build_context", "get_experiment", "experiment_names", "record_run"]


def get_experiment(name: str) -> Experiment:
    """The experiment registered as ``name`` (built in, or by a plug-in: see :mod:`flowcs.registry`)."""
    target = get_experiment_target(name)
    if isinstance(target, ModuleType):
        return ModuleExperiment(name, target)
    if isinstance(target, type) and issubclass(target, Experiment):
        target = target()
    if not isinstance(target, Experiment):
        raise ConfigError(f"experiment {name!r} is registered as {target!r}, which is neither an Experiment nor "
                          f"an experiment module")
    return target


def experiment_names() -> list[str]:
    """Every registered experiment name."""
    return available("experiment")
