"""Named experiments (data × operator × task × policies) and how a run is set up."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from ..config import apply_overrides, from_dict, load_yaml, merge, to_dict
from ..data import resolve_data_root
from ..errors import ConfigError
from ..runinfo import resolve_device, seed_everything
from ..training.distributed import init_distributed
from .common import RunContext

EXPERIMENTS = {
    "mnist-classify": "flowcs.experiments.mnist_classify",
    "mnist-recon": "flowcs.experiments.mnist_recon",
    "faces-recon": "flowcs.experiments.faces_recon",
    "mri-4x": "flowcs.experiments.mri.mri_4x", "mri-8x": "flowcs.experiments.mri.mri_8x",  # one module, two presets
}


def get_experiment(name: str) -> ModuleType:
    """The module of experiment ``name``: built in, or registered by a plug-in (see :mod:`flowcs.registry`)."""
    from ..registry import check_experiment_module, load_plugins

    load_plugins()
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; available: {', '.join(sorted(EXPERIMENTS))} "
                          f"(add your own with flowcs.registry.register_experiment, $FLOWCS_PLUGINS or the "
                          f"'flowcs.experiments' entry point)")
    try:
        module = importlib.import_module(EXPERIMENTS[name])
    except ModuleNotFoundError as exc:
        if exc.name and EXPERIMENTS[name].startswith(exc.name):
            raise ConfigError(f"experiment {name!r}: cannot import its module {EXPERIMENTS[name]!r} ({exc})") from exc
        raise
    return check_experiment_module(name, module)


def build_context(
    name: str,
    config: str | None = None,
    overrides: list[str] | None = None,
    smoke: bool = False,
    run_dir: str | None = None,
    results_dir: str | None = None,
    data: str | None = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
) -> RunContext:
    """Resolve config (defaults ← smoke preset ← file ← --set), paths, device and process group."""
    exp = get_experiment(name)
    raw: dict = to_dict(exp.Config())
    if smoke:
        raw = merge(raw, exp.SMOKE)
    if config:
        raw = merge(raw, load_yaml(config))
    raw = apply_overrides(raw, overrides or [])
    cfg = from_dict(exp.Config, raw)
    exp.validate(cfg)
    dev = resolve_device(device)
    dist = init_distributed(dev)
    if dev.type == "cuda" and dist.enabled:
        import torch

        torch.cuda.set_device(dist.local_rank)
        dev = __import__("torch").device("cuda", dist.local_rank)
    run = Path(run_dir) if run_dir else Path("runs") / (name + ("-smoke" if smoke else ""))
    res = Path(results_dir) if results_dir else (run / "results" if smoke else Path("results") / name)
    seed_everything(seed + dist.rank)
    return RunContext(name, cfg, to_dict(cfg), run, res, resolve_data_root(data), seed, dev, dist, resume)
