"""Extension points: register experiments, operators, tasks and policies from your own code.

Nothing in flowcs has to be edited to add an acquisition geometry, a task model or a whole experiment. Three
ways, from the most to the least permanent:

1. **Entry points** in your package's ``pyproject.toml`` (discovered when flowcs first looks a name up)::

       [project.entry-points."flowcs.experiments"]
       kspace-points = "my_package.experiment:EXPERIMENT"   # a flowcs.experiments.base.Experiment
       [project.entry-points."flowcs.operators"]
       kspace-points = "my_package.geometry:RandomPointsOperator"
       [project.entry-points."flowcs.tasks"]
       my-varnet = "my_package.task:VarNetTask"
       [project.entry-points."flowcs.policies"]
       my-policy = "my_package.policy:MyPolicy"

2. **Plug-in modules** named in ``$FLOWCS_PLUGINS`` (comma separated, importable from ``sys.path``; e.g.
   ``FLOWCS_PLUGINS=my_plugin flowcs run my-experiment``): importing them runs their ``register_*`` calls.

3. **Calls** from your own Python code: :func:`register_experiment`, :func:`register_operator`,
   :func:`register_task`, :func:`register_policy`.

An experiment is a :class:`flowcs.experiments.base.Experiment` (its configuration class, ``--smoke`` preset,
stages, ``train_stage``, ``setup`` and ``evaluate``); built-in experiments are registered here exactly like a
plug-in's, as ``"module:attribute"`` strings resolved on first use. A plain module with ``Config``, ``SMOKE``,
``STAGES``, ``validate``, ``train``, ``evaluate`` (and optionally ``ablate``) is accepted too (the older form).
Once registered, ``flowcs train / evaluate / run / report`` work with it and ``--config FILE`` /
``--set key=value`` configure it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from importlib import metadata
from types import ModuleType
from typing import Any

from .errors import ConfigError

#: entry-point group of each kind of extension
GROUPS = {"experiment": "flowcs.experiments", "operator": "flowcs.operators", "task": "flowcs.tasks",
          "policy": "flowcs.policies"}
#: environment variable naming plug-in modules to import (comma separated)
PLUGINS_ENV = "FLOWCS_PLUGINS"

# name -> class, factory or "module:attribute" string (resolved on first use)
_REGISTRY: dict[str, dict[str, Any]] = {
    "experiment": {"mnist-classify": "flowcs.experiments.classify:EXPERIMENT",
                   "mnist-recon": "flowcs.experiments.mnist_recon:EXPERIMENT",
                   "faces-recon": "flowcs.experiments.faces_recon:EXPERIMENT",
                   "mri-4x": "flowcs.experiments.mri:MRI_4X", "mri-8x": "flowcs.experiments.mri:MRI_8X"},
    "operator": {"pixels": "flowcs.operators.pixel:PixelOperator",
                 "kspace-lines": "flowcs.operators.kspace:KSpaceLineOperator"},
    "task": {"classify": "flowcs.tasks.base:ClassificationTask",
             "reconstruct": "flowcs.tasks.base:ReconstructionTask"},
    "policy": {"random": "flowcs.policies.random:RandomPolicy",
               "flow": "flowcs.flow.policy:FlowPolicy"},
}
_resolved: dict[tuple[str, str], Any] = {}  # (experiment name, "module:attr") -> the imported object
_loaded_plugins: set[str] = set()
_entry_points_loaded = False


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name or name.strip() != name or " " in name:
        raise ConfigError(f"{kind} name {name!r} must be a non-empty string without spaces")
    return name


def register_experiment(name: str, experiment: Any, replace: bool = False) -> None:
    """Make ``flowcs train|evaluate|run NAME`` use ``experiment``: an ``Experiment`` instance, a
    ``"module:attribute"`` string naming one, or a module path (a module-style experiment).

    A string is imported when the experiment is first used. Registering a name that exists already with another
    target is an error unless ``replace=True``.
    """
    if isinstance(experiment, ModuleType):
        experiment = experiment.__name__
    _register("experiment", name, experiment, replace)


def _register(kind: str, name: str, obj: Any, replace: bool) -> None:
    _check_name(kind, name)
    table = _REGISTRY[kind]
    if name in table and table[name] is not obj and table[name] != obj and not replace:
        raise ConfigError(f"{kind} {name!r} is already registered ({_describe(table[name])}); "
                          f"pass replace=True to override it")
    table[name] = obj


def register_operator(name: str, cls: type | str | Callable, replace: bool = False) -> None:
    """Register an :class:`~flowcs.operators.Operator` subclass (or ``"module:Class"``) under ``name``."""
    _register("operator", name, cls, replace)


def register_task(name: str, cls: type | str | Callable, replace: bool = False) -> None:
    """Register a :class:`~flowcs.tasks.base.Task` subclass (or ``"module:Class"``) under ``name``."""
    _register("task", name, cls, replace)


def register_policy(name: str, cls: type | str | Callable, replace: bool = False) -> None:
    """Register a :class:`~flowcs.policies.Policy` subclass (or ``"module:Class"``) under ``name``."""
    _register("policy", name, cls, replace)


def _describe(obj: Any) -> str:
    return obj if isinstance(obj, str) else f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import {module!r} ({exc})") from exc
    if not attr:
        return mod
    try:
        obj: Any = mod
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise ConfigError(f"{module} has no attribute {attr!r}") from exc
    return obj


def _get(kind: str, name: str, base: str) -> Any:
    load_plugins()
    table = _REGISTRY[kind]
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table))} (register one with "
                          f"flowcs.registry.register_{kind} or the '{GROUPS[kind]}' entry point)")
    obj = table[name]
    if isinstance(obj, str):
        obj = table[name] = _resolve(obj)
    expected = _resolve(base)
    if isinstance(obj, type) and not issubclass(obj, expected):
        raise ConfigError(f"{kind} {name!r} ({_describe(obj)}) is not a subclass of {expected.__qualname__}")
    return obj


def get_experiment_target(name: str) -> Any:
    """What ``name`` is registered as, imported (an Experiment, or a module for a module-style experiment)."""
    load_plugins()
    table = _REGISTRY["experiment"]
    if name not in table:
        raise ConfigError(f"unknown experiment {name!r}; available: {', '.join(sorted(table))} "
                          f"(add your own with flowcs.registry.register_experiment, $FLOWCS_PLUGINS or the "
                          f"'flowcs.experiments' entry point)")
    obj = table[name]
    if isinstance(obj, str):
        if (name, obj) not in _resolved:
            try:
                _resolved[(name, obj)] = _resolve(obj)
            except ConfigError as exc:
                raise ConfigError(f"experiment {name!r}: cannot import its module {obj.partition(':')[0]!r} "
                                  f"({exc})") from None
        obj = _resolved[(name, obj)]
    return obj


def get_operator(name: str) -> Any:
    """The operator class (or factory) registered as ``name``; call it with the geometry's arguments."""
    return _get("operator", name, "flowcs.operators.base:Operator")


def get_task(name: str) -> Any:
    """The task class (or factory) registered as ``name``; call it with the (trained) model."""
    return _get("task", name, "flowcs.tasks.base:Task")


def get_policy(name: str) -> Any:
    """The policy class (or factory) registered as ``name``."""
    return _get("policy", name, "flowcs.policies.base:Policy")


def available(kind: str) -> list[str]:
    """Registered names of one kind: ``experiment``, ``operator``, ``task`` or ``policy``."""
    if kind not in GROUPS:
        raise ConfigError(f"unknown kind {kind!r}; choose one of {', '.join(GROUPS)}")
    load_plugins()
    return sorted(_REGISTRY[kind])


def import_plugin(module: str) -> ModuleType:
    """Import a plug-in module once (its ``register_*`` calls run on import)."""
    module = module.strip()
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise ConfigError(f"plug-in module {module!r} not found (is its folder on PYTHONPATH, or the package "
                              f"installed?)") from exc
        raise
    _loaded_plugins.add(module)
    return mod


def _entry_points(group: str) -> list:
    return list(metadata.entry_points(group=group))


def load_plugins(modules: list[str] | None = None) -> None:
    """Import ``$FLOWCS_PLUGINS`` and ``modules``, and read the entry points of :data:`GROUPS` (once).

    Entry points never replace a name registered by a call or by flowcs itself.
    """
    global _entry_points_loaded
    names = [m for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()] + list(modules or [])
    for name in names:
        if name.strip() not in _loaded_plugins:
            import_plugin(name)
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in _entry_points(GROUPS["experiment"]):
        _REGISTRY["experiment"].setdefault(ep.name, ep.value)
    for kind in ("operator", "task", "policy"):
        for ep in _entry_points(GROUPS[kind]):
            _REGISTRY[kind].setdefault(ep.name, ep.value)


__all__ = ["GROUPS", "PLUGINS_ENV", "register_experiment", "register_operator", "register_task", "register_policy",
           "get_experiment_target", "get_operator", "get_task", "get_policy", "available", "import_plugin",
           "load_plugins"]
