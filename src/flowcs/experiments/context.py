"""A run of an experiment: its configuration, directories, seed, device and process group (:class:`RunContext`).

:func:`build_context` resolves the configuration in one order for every command — the experiment's defaults
(code), then its ``--smoke`` preset, then a run directory's own ``config.yaml`` where the command reads a
trained run, then ``--config FILE``, then ``--set key=value`` — validates it before any work, and joins the
torchrun process group when there is one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import apply_overrides, from_dict, load_yaml, merge, to_dict
from ..data import resolve_data_root
from ..errors import ConfigError
from ..io import write_json
from ..runinfo import git_commit, resolve_device, run_metadata, seed_everything
from ..training.distributed import DistInfo, init_distributed

__all__ = ["RunContext", "build_context", "resolve_config", "record_run", "run_info", "load_run", "RUN_INFO"]

#: a run directory's record of which experiment it holds and whether it is a smoke run (beside config.yaml)
RUN_INFO = "experiment.json"


@dataclass
class RunContext:
    """Everything a stage needs besides its own config section."""

    experiment: str
    cfg: Any
    cfg_dict: dict
    run_dir: Path
    results_dir: Path
    data_root: Path
    seed: int
    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)
    resume: bool = False
    smoke: bool = False
    started: float = field(default_factory=time.time)
    commit: str | None = field(default_factory=lambda: git_commit())  # the code this run started with

    def checkpoint(self, name: str) -> Path:
        return self.run_dir / f"{name}.pt"

    def command(self, verb: str, *extra: str) -> str:
        """The flowcs command line for this run (``--smoke`` and ``--run-dir`` as the user gave them)."""
        parts = ["flowcs", verb, self.experiment, *(["--smoke"] if self.smoke else []), "--run-dir", str(self.run_dir)]
        return " ".join([*parts, *extra])

    def metadata(self, **extra) -> dict:
        return run_metadata(self.cfg_dict, self.seed, self.device, self.started, self.commit,
                            {"experiment": self.experiment, "smoke": self.smoke, "data_root": str(self.data_root),
                             **extra})

    def record_data_sources(self, sources: dict) -> None:
        """Remember which data files training used (``<run_dir>/data_sources.json``) for the results."""
        if self.dist.is_main:
            write_json(self.run_dir / "data_sources.json", sources)

    def recorded_data_sources(self) -> dict:
        path = self.run_dir / "data_sources.json"
        return json.loads(path.read_text()) if path.is_file() else {"train": "unknown (data_sources.json missing)"}


def resolve_config(experiment, smoke: bool = False, run_config: Path | None = None, config: str | None = None,
                   overrides: list[str] | None = None, extra: dict | None = None) -> tuple[Any, dict]:
    """(typed config, dict) of ``experiment``: defaults ← smoke preset ← run's config.yaml ← file ← ``extra`` ←
    ``--set``."""
    raw: dict = to_dict(experiment.default_config())
    if smoke:
        raw = merge(raw, experiment.smoke)
    if run_config is not None:
        raw = merge(raw, load_yaml(run_config))
    if config:
        raw = merge(raw, load_yaml(config))
    if extra:
        raw = merge(raw, extra)
    raw = apply_overrides(raw, overrides or [])
    try:
        cfg = from_dict(experiment.config_class, raw)
    except ConfigError as exc:
        if run_config is None:
            raise
        raise ConfigError(f"{exc} (the run's {run_config} was written by another version of flowcs: train the run "
                          f"again, or remove the key from that file)") from None
    experiment.validate(cfg)
    return cfg, to_dict(cfg)


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
    use_run_config: bool = False,
    extra: dict | None = None,
) -> RunContext:
    """Resolve config, paths, device and process group of experiment ``name``.

    ``use_run_config``: commands that read a trained run (evaluate, compare, ablate) start from the run
    directory's own ``config.yaml`` when it has one, so a run is read with the settings it was trained with.
    """
    from . import get_experiment

    exp = get_experiment(name)
    run = Path(run_dir) if run_dir else Path("runs") / (name + ("-smoke" if smoke else ""))
    run_config = run / "config.yaml" if use_run_config and (run / "config.yaml").is_file() else None
    if run_config is not None:
        smoke = smoke or bool(run_info(run).get("smoke"))  # read a smoke run as one: results stay in the run
    cfg, cfg_dict = resolve_config(exp, smoke, run_config, config, overrides, extra)
    dev = resolve_device(device)
    dist = init_distributed(dev)
    if dev.type == "cuda" and dist.enabled:
        torch.cuda.set_device(dist.local_rank)
        dev = torch.device("cuda", dist.local_rank)
    res = Path(results_dir) if results_dir else (run / "results" if smoke else Path("results") / name)
    seed_everything(seed + dist.rank)
    return RunContext(name, cfg, cfg_dict, run, res, resolve_data_root(data), seed, dev, dist, resume, smoke)


def run_info(run_dir: Path) -> dict:
    """``<run_dir>/experiment.json`` (``{}`` for runs written before it existed)."""
    path = Path(run_dir) / RUN_INFO
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def record_run(ctx: RunContext) -> None:
    """Write the run's effective configuration and identity into its directory (config.yaml, experiment.json)."""
    import yaml

    from ..io import write_text

    if ctx.dist.is_main:
        write_text(ctx.run_dir / "config.yaml", yaml.safe_dump(ctx.cfg_dict, sort_keys=False))
        write_json(ctx.run_dir / RUN_INFO, {"experiment": ctx.experiment, "smoke": ctx.smoke})


def load_run(run_dir: str | Path, device: str = "cpu", data: str | None = None, need: str = "flow",
             experiments: tuple[str, ...] | None = None) -> RunContext:
    """The context of a trained run directory, configured exactly as it was trained (its ``config.yaml``).

    ``need`` names a stage that must exist; ``experiments`` restricts which experiments are accepted (e.g. the
    MRI ones for ``flowcs mri mask``). Every problem is a one-line error naming the directory.
    """
    from ..errors import ConfigError
    from ..training.checkpoint import load_checkpoint

    run = Path(run_dir)
    cfg_path, stage_path = run / "config.yaml", run / f"{need}.pt"
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path}: not found; --run-dir must be a trained run (flowcs train EXPERIMENT "
                          f"--run-dir {run})")
    if not stage_path.is_file():
        raise ConfigError(f"{stage_path}: no trained {need} stage in this run directory")
    name = run_info(run).get("experiment") or load_checkpoint(stage_path, need).get("signature", {}).get("experiment")
    if experiments is not None and name not in experiments:
        raise ConfigError(f"{run}: holds experiment {name!r}; expected one of {', '.join(experiments)}")
    return build_context(name, run_dir=str(run), data=data, device=device, use_run_config=True,
                         results_dir=str(run / "results"))
