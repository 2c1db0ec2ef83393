"""The one results schema (SPEC §9) and its Markdown rendering, for metrics.json, compare.json and ablations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import to_json, write_texts

__all__ = ["metrics_payload", "markdown_table", "write_results", "UNITS"]

UNITS = {"percent": "%", "pixels": " px", "acceleration": "×"}


def metrics_payload(experiment: str, metric: str, higher_is_better: bool, budget_unit: str, budgets: list,
                    policies: dict[str, dict], **extra: Any) -> dict:
    """The one results schema (SPEC §9)."""
    return {"experiment": experiment, "metric": metric, "higher_is_better": higher_is_better,
            "budget_unit": budget_unit, "budgets": list(budgets), "policies": policies, **extra}


def markdown_table(payload: dict, scale: float = 1.0, digits: int = 2) -> str:
    """Metric-vs-budget table, one row per policy, ``mean ± std``."""
    unit = UNITS.get(payload["budget_unit"], "")
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


def write_results(results_dir: Path, name: str, payload: dict, meta: dict, table_scale: float = 1.0,
                  markdown: str | None = None) -> None:
    """Write ``<name>.json``, ``<name>.md`` (default: :func:`markdown_table`) and the run metadata atomically."""
    run_file = results_dir / "run.json" if name == "metrics" else results_dir / f"{name}.run.json"
    write_texts({results_dir / f"{name}.json": to_json(payload),
                 results_dir / f"{name}.md": markdown if markdown is not None else markdown_table(payload, table_scale),
                 run_file: to_json(meta)})
