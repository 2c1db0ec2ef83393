"""The one results schema (SPEC §9) and its Markdown rendering, for metrics.json, compare.json and ablations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import to_json, write_texts

__all__ = ["metrics_payload", "markdown_table", "write_results", "UNITS", "ORACLE_ROWS", "spread", "format_cell",
           "headline", "higher_is_better", "tables_markdown"]

UNITS = {"percent": "%", "pixels": " px", "acceleration": "×"}


def metrics_payload(experiment: str, metric: str, higher_is_better: bool, budget_unit: str, budgets: list,
                    policies: dict[str, dict], **extra: Any) -> dict:
    """The one results schema (SPEC §9)."""
    return {"experiment": experiment, "metric": metric, "higher_is_better": higher_is_better,
            "budget_unit": budget_unit, "budgets": list(budgets), "policies": policies, **extra}


#: rows that measure everything: a ceiling for the task model, never "the best policy"
ORACLE_ROWS = ("full",)


def higher_is_better(payload: dict, metric: str) -> bool:
    """Direction of ``metric``: the payload says it for its primary metric; error-like names are lower-is-better."""
    if metric == payload.get("metric"):
        return bool(payload.get("higher_is_better", True))
    return not any(k in metric.lower() for k in ("mae", "mse", "nmse", "error", "loss", "lpips"))


def spread(row: dict, j: int) -> tuple:
    """The uncertainty shown next to ``row``'s j-th mean: ``("std", s)`` for a spread across evaluation seeds
    (``std_seeds``, several seeds) or test images (``std_images``), else ``("ci", lo, hi)`` for the bootstrap
    95 % interval (one seed), else ``()``. Files written before the keys were split say ``std``/``ci95_pooled``."""
    for key in ("std_images", "std_seeds", "std"):
        vals = row.get(key)
        if vals and j < len(vals) and isinstance(vals[j], (int, float)) and vals[j] > 0:
            return ("std", float(vals[j]))
    ci = row.get("ci95") or row.get("ci95_pooled")
    if ci and j < len(ci) and ci[j] and ci[j][0] != ci[j][1]:
        return ("ci", float(ci[j][0]), float(ci[j][1]))
    return ()


def format_cell(row: dict, j: int, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` or ``mean [lo, hi]`` (one seed: the 95 % interval, never a ``± 0.00``)."""
    m, sp = row["mean"][j], spread(row, j)
    text = f"{m * scale:.{digits}f}"
    if sp and sp[0] == "std":
        return text + f" ± {sp[1] * scale:.{digits}f}"
    if sp:
        return text + f" [{sp[1] * scale:.{digits}f}, {sp[2] * scale:.{digits}f}]"
    return text


#: decimals per metric: differences that matter are ~0.1 accuracy points / dB, ~1e-3 SSIM / MAE / NMSE
DIGITS = {"accuracy": 2, "psnr": 2, "mae": 4, "ssim": 4, "nmse": 4}


def markdown_table(payload: dict, scale: float = 1.0, digits: int | None = None, metric: str | None = None) -> str:
    """Metric-vs-budget table, one row per policy; the head names the metric and its direction (``digits``
    default: :data:`DIGITS` of the metric)."""
    unit = UNITS.get(payload["budget_unit"], "")
    metric = metric or payload.get("metric", "metric")
    if digits is None:
        digits = DIGITS.get(metric.split("_")[0], 4)
    better = "higher" if higher_is_better(payload, metric) else "lower"
    head = (f"| policy — {metric}{' %' if scale == 100 else ''} ({better} is better) | "
            + " | ".join(f"{b}{unit}" for b in payload["budgets"]) + " |")
    sep = "|---" * (len(payload["budgets"]) + 1) + "|"
    rows = [head, sep]
    for name, p in payload["policies"].items():
        rows.append(f"| {name} | " + " | ".join(format_cell(p, j, scale, digits) for j in range(len(p["mean"])))
                    + " |")
    return "\n".join(rows) + "\n"


def tables_markdown(payload: dict, scale: float = 1.0, digits: dict | None = None) -> str:
    """The primary metric's table and one per extra metric (``extra_metrics``), each naming its metric."""
    digits = {**DIGITS, **(digits or {})}
    out = [markdown_table(payload, scale, digits.get(payload["metric"], 4))]
    for metric, rows in (payload.get("extra_metrics") or {}).items():
        if isinstance(rows, dict) and rows and all(isinstance(r, dict) and "mean" in r for r in rows.values()):
            out.append(markdown_table({**payload, "policies": rows}, 1.0, digits.get(metric.split("_")[0], 4),
                                      metric))
    return "\n".join(out)


def headline(payload: dict, ours: str = "flow") -> list[dict]:
    """Per budget: our policy's mean against the best *other* policy (not our own variants like ``flow+ft``,
    not the oracle rows). The conclusion a reader wants first; ``[]`` when there is no ``ours`` row."""
    rows = payload.get("policies", {})
    if ours not in rows:
        return []
    hib = payload.get("higher_is_better", True)
    out = []
    for j, budget in enumerate(payload["budgets"]):
        others = {n: r["mean"][j] for n, r in rows.items()
                  if not n.startswith(ours) and n not in ORACLE_ROWS and j < len(r["mean"])}
        if not others:
            continue
        best = (max if hib else min)(others, key=others.get)
        mine = rows[ours]["mean"][j]
        out.append({"budget": budget, "ours": mine, "best_other": best, "other": others[best],
                    "ahead": mine >= others[best] if hib else mine <= others[best]})
    return out


def write_results(results_dir: Path, name: str, payload: dict, meta: dict, table_scale: float = 1.0,
                  markdown: str | None = None) -> None:
    """Write ``<name>.json``, ``<name>.md`` (default: :func:`markdown_table`) and the run metadata atomically."""
    run_file = results_dir / "run.json" if name == "metrics" else results_dir / f"{name}.run.json"
    write_texts({results_dir / f"{name}.json": to_json(payload),
                 results_dir / f"{name}.md": markdown if markdown is not None else markdown_table(payload, table_scale),
                 run_file: to_json(meta)})
