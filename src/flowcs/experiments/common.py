"""What every experiment shares: the run context, staged training, and the SPEC §9 results files."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..io import write_json, write_text
from ..runinfo import run_metadata
from ..training.distributed import DistInfo


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
    started: float = field(default_factory=time.time)

    def checkpoint(self, name: str) -> Path:
        return self.run_dir / f"{name}.pt"

    def metadata(self, **extra) -> dict:
        return run_metadata(self.cfg_dict, self.seed, self.device, self.started,
                            {"experiment": self.experiment, "data_root": str(self.data_root), **extra})


def metrics_payload(
    experiment: str,
    metric: str,
    higher_is_better: bool,
    budget_unit: str,
    budgets: list,
    policies: dict[str, dict],
    **extra: Any,
) -> dict:
    """The one results schema (SPEC §9)."""
    return {
        "experiment": experiment,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "budget_unit": budget_unit,
        "budgets": list(budgets),
        "policies": policies,
        **extra,
    }


def markdown_table(payload: dict, scale: float = 1.0, digits: int = 2) -> str:
    """Metric-vs-budget table, one row per policy, ``mean ± std``."""
    unit = {"percent": "%", "pixels": " px", "acceleration": "×"}.get(payload["budget_unit"], "")
    head = "| policy | " + " | ".join(f"{b}{unit}" for b in payload["budgets"]) + " |"
    sep = "|---" * (len(payload["budgets"]) + 1) + "|"
    rows = [head, sep]
    for name, p in payload["policies"].items():
        cells = []
        for i, m in enumerate(p["mean"]):
            s = p.get("std", [None] * len(p["mean"]))[i]
            cells.append(f"{m * scale:.{digits}f}" + (f" ± {s * scale:.{digits}f}" if s is not None else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write_results(results_dir: Path, name: str, payload: dict, meta: dict, table_scale: float = 1.0) -> None:
    """Write ``<name>.json``, ``<name>.md`` and ``run.json`` atomically."""
    write_json(results_dir / f"{name}.json", payload)
    write_text(results_dir / f"{name}.md", markdown_table(payload, table_scale))
    write_json(results_dir / "run.json" if name == "metrics" else results_dir / f"{name}.run.json", meta)
