"""``flowcs report RESULTS_DIR``: one self-contained HTML page for an experiment's results.

The page holds, in this order: the headline facts (experiment, metric, budgets), one table per results file
(``metrics.json``, ``compare.json``, ``ablation.json`` and any other file in the SPEC §9 schema: one row per
policy, ``mean ± std`` per budget, the best value of each column in bold), the extra metrics and subsets those
files carry, every PNG figure of the folder embedded as a ``data:`` URI, and the run metadata (``run.json``:
command, git commit, versions, device, seeds, configuration). It loads no script, style sheet or image from
anywhere else, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError
from .evaluation.tables import ORACLE_ROWS, headline, higher_is_better, spread
from .io import write_text

#: results files shown first, in this order; other ``*.json`` files in the SPEC §9 schema follow
KNOWN_RESULTS = ("metrics.json", "compare.json", "ablation.json")
_UNITS = {"percent": "%", "pixels": " px", "acceleration": "×", "lines": " lines", "points": " pts"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#1b1f24;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.8em}
h3{margin-bottom:.3em}.sub{color:#57606a;margin-top:0}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.92em}
th,td{border:1px solid #d0d7de;padding:.3em .65em;text-align:right}th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left}td.best{font-weight:700;background:#dafbe1}
table.meta td{text-align:left;font-family:ui-monospace,monospace;font-size:.9em}
figure{margin:1em 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #d0d7de}figcaption{color:#57606a;font-size:.88em}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em;max-height:30em}
.note{color:#57606a;font-size:.9em;max-width:60em}
"""


# ----------------------------------------------------------------------------- loading


def is_results_payload(data: Any) -> bool:
    """True for a SPEC §9 payload: ``budgets`` and ``policies`` with a ``mean`` list per policy."""
    return (isinstance(data, dict) and isinstance(data.get("budgets"), list) and isinstance(data.get("policies"), dict)
            and all(isinstance(r, dict) and isinstance(r.get("mean"), list) for r in data["policies"].values()))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc


def collect(results_dir: Path) -> dict:
    """Read what a report shows from ``results_dir``: results payloads, run metadata, figures.

    Returns ``{"results": {file name: payload}, "runs": {file name: metadata}, "figures": [paths],
    "other": {file name: data}}``. A missing folder or a folder without any results file is a
    :class:`~flowcs.errors.DataError`.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DataError(f"{results_dir}: no such results folder")
    results, runs, other = {}, {}, {}
    names = sorted(p.name for p in results_dir.glob("*.json"))
    ordered = [n for n in KNOWN_RESULTS if n in names] + [n for n in names if n not in KNOWN_RESULTS]
    for name in ordered:
        data = _read_json(results_dir / name)
        if name == "run.json" or name.endswith(".run.json"):
            runs[name] = data
        elif is_results_payload(data):
            results[name] = data
        else:
            other[name] = data
    if not results:
        raise DataError(f"{results_dir}: no results file (metrics.json, compare.json, ablation.json or another "
                        f"file with 'budgets' and 'policies'); run `flowcs evaluate` first")
    figures = sorted(results_dir.glob("*.png"))
    return {"results": results, "runs": runs, "figures": figures, "other": other}


# ----------------------------------------------------------------------------- rendering


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _scale(payload: dict) -> float:
    """Accuracies are shown in percent (as in the Markdown tables)."""
    return 100.0 if payload.get("metric") == "accuracy" else 1.0


def _fmt(x: Any, scale: float = 1.0, digits: int = 4) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return _e(x)
    if not math.isfinite(x):
        return _e(x)
    return f"{x * scale:.{digits}g}"


def _budget_header(payload: dict) -> list[str]:
    unit = _UNITS.get(str(payload.get("budget_unit", "")), "")
    return [f"{b:g}{unit}" if isinstance(b, (int, float)) else str(b) for b in payload["budgets"]]


def policy_table(payload: dict, rows: dict | None = None, metric: str | None = None,
                 higher_is_better: bool | None = None) -> str:
    """HTML table: one row per policy, ``mean ± std`` (or ``[95 % interval]`` with one seed) per budget, the best
    policy of each column in bold (never an oracle row such as ``full``)."""
    rows = payload["policies"] if rows is None else rows
    metric = metric or payload.get("metric", "metric")
    hib = payload.get("higher_is_better", True) if higher_is_better is None else higher_is_better
    scale = 100.0 if metric == "accuracy" else 1.0
    n_b = len(payload["budgets"])
    best: list[float | None] = []
    for j in range(n_b):
        vals = [r["mean"][j] for n, r in rows.items() if n not in ORACLE_ROWS and
                j < len(r["mean"]) and isinstance(r["mean"][j], (int, float)) and math.isfinite(r["mean"][j])]
        best.append((max(vals) if hib else min(vals)) if vals else None)
    head = "".join(f"<th>{_e(h)}</th>" for h in _budget_header(payload))
    unit = " (%)" if scale == 100 else ""
    out = [f'<table class="results" data-metric="{_e(metric)}"><thead><tr><th>policy — {_e(metric)}{unit}, '
           f'{"higher" if hib else "lower"} is better</th>{head}</tr></thead><tbody>']
    for name, r in rows.items():
        cells = []
        for j in range(n_b):
            if j >= len(r["mean"]):
                cells.append("<td>—</td>")
                continue
            m, sp = r["mean"][j], spread(r, j)
            text = _fmt(m, scale) + (f" ± {_fmt(sp[1], scale, 2)}" if sp and sp[0] == "std" else
                                     f" [{_fmt(sp[1], scale)}, {_fmt(sp[2], scale)}]" if sp else "")
            cls = ' class="best"' if best[j] is not None and m == best[j] and name not in ORACLE_ROWS else ""
            cells.append(f"<td{cls}>{text}</td>")
        out.append(f"<tr><td>{_e(name)}</td>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _margins_table(payload: dict) -> str:
    margins = payload.get("margins")
    if not isinstance(margins, dict) or not margins:
        return ""
    head = "".join(f"<th>{_e(h)}</th>" for h in _budget_header(payload))
    rows = []
    for name, vals in margins.items():
        if isinstance(vals, list):
            rows.append(f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{_fmt(v, _scale(payload))}</td>" for v in vals)
                        + "</tr>")
    if not rows:
        return ""
    return (f'<h3>Margins (positive = flow better)</h3><table class="margins"><thead><tr><th>comparison</th>{head}'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _facts(payload: dict) -> str:
    keys = [("experiment", "experiment"), ("metric", "metric"), ("higher_is_better", "higher is better"),
            ("budget_unit", "budget unit"), ("seeds", "evaluation seeds"), ("test_images", "test images"),
            ("first_samples", "first-measurement locations")]
    items = [f"<tr><td>{_e(label)}</td><td>{_e(payload[k])}</td></tr>" for k, label in keys if k in payload]
    data = payload.get("data")
    if isinstance(data, dict):
        items += [f"<tr><td>data: {_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in data.items()
                  if not isinstance(v, (dict, list))]
    return f'<table class="meta">{"".join(items)}</table>' if items else ""


def results_section(name: str, payload: dict) -> str:
    """The ``<section>`` of one results file: facts, main table, extra metrics, margins, subsets, notes."""
    out = [f'<section class="results-file" id="{_e(name)}"><h2>{_e(name)}</h2>', _facts(payload),
           policy_table(payload)]
    for metric, rows in (payload.get("extra_metrics") or {}).items():
        if isinstance(rows, dict) and all(isinstance(r, dict) and "mean" in r for r in rows.values()):
            out.append(f"<h3>{_e(metric)}</h3>" + policy_table(payload, rows, metric, _hib(metric, payload)))
    out.append(_margins_table(payload))
    for sub, block in (payload.get("subsets") or {}).items():
        if isinstance(block, dict) and isinstance(block.get("policies"), dict):
            m = block.get("metric", payload.get("metric"))
            out.append(f"<h3>subset: {_e(sub)}</h3>" + policy_table(payload, block["policies"], m, _hib(m, payload)))
    for key in ("notes", "note"):
        if isinstance(payload.get(key), str):
            out.append(f'<p class="note">{_e(payload[key])}</p>')
    out.append("</section>")
    return "".join(out)


def _hib(metric: str, payload: dict) -> bool:
    return higher_is_better(payload, metric)


def conclusion(found: dict) -> str:
    """The answer first: the flow policy against the best other policy at every budget, from ``compare.json``
    (every policy on the same test images) or, without one, ``metrics.json``."""
    name = next((n for n in ("compare.json", "metrics.json") if n in found["results"]), None)
    if name is None:
        return ""
    payload = found["results"][name]
    rows = headline(payload)
    if not rows:
        return ""
    scale, unit = _scale(payload), _UNITS.get(str(payload.get("budget_unit", "")), "")
    items = []
    for r in rows:
        verdict = "ahead of or tied with" if r["ahead"] else "behind"
        budget = f"{r['budget']:g}" if isinstance(r["budget"], (int, float)) else str(r["budget"])
        items.append(f"<li>{_e(budget)}{_e(unit)}: flow {_fmt(r['ours'], scale)} — {verdict} the best other policy, "
                     f"{_e(r['best_other'])} {_fmt(r['other'], scale)}</li>")
    return (f'<section id="conclusion"><h2>Conclusion ({_e(payload.get("metric"))}, {_e(name)}; means — see the '
            f'tables for intervals and ties)</h2><ul>{"".join(items)}</ul></section>')


def figure_html(path: Path) -> str:
    """One PNG embedded as a base64 ``data:`` URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(path.name)}</figcaption></figure>")


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out += _flatten(v, f"{prefix}{k}." if not isinstance(v, dict) else f"{prefix}{k}.")
        return out
    return [(prefix.rstrip("."), d)]


def run_section(name: str, meta: dict) -> str:
    """Run metadata: top-level facts as a table, the configuration as nested keys."""
    if not isinstance(meta, dict):
        return f"<h3>{_e(name)}</h3><pre>{_e(json.dumps(meta, indent=2))}</pre>"
    facts = [(k, v) for k, v in meta.items() if k != "config"]
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(json.dumps(v) if isinstance(v, (dict, list)) else v)}</td></tr>"
                   for k, v in facts)
    out = [f'<h3>{_e(name)}</h3><table class="meta run-meta">{rows}</table>']
    if isinstance(meta.get("config"), dict):
        cfg = "".join(f"<tr><td>{_e(k)}</td><td>{_e(json.dumps(v))}</td></tr>" for k, v in _flatten(meta["config"]))
        out.append(f'<details><summary>configuration</summary><table class="meta config">{cfg}</table></details>')
    return "".join(out)


def render(results_dir: Path, title: str | None = None) -> str:
    """The whole HTML page for ``results_dir`` (see the module doc)."""
    found = collect(results_dir)
    first = next(iter(found["results"].values()))
    smoke = any(isinstance(m, dict) and m.get("smoke") for m in found["runs"].values())
    title = title or (f"flowcs report — {first.get('experiment', Path(results_dir).name)}"
                      + (" (SMOKE RUN: tiny settings, not a result)" if smoke else ""))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f'<p class="sub">results folder <code>{_e(Path(results_dir))}</code> · files: '
             f"{_e(', '.join([*found['results'], *found['runs'], *found['other']]))}</p>", conclusion(found)]
    for name, payload in found["results"].items():
        parts.append(results_section(name, payload))
    if found["figures"]:
        parts.append('<section id="figures"><h2>Figures</h2>')
        parts += [figure_html(p) for p in found["figures"]]
        parts.append("</section>")
    if found["runs"]:
        parts.append('<section id="run"><h2>Run metadata</h2>')
        parts += [run_section(n, m) for n, m in found["runs"].items()]
        parts.append("</section>")
    for name, data in found["other"].items():
        parts.append(f"<details><summary>{_e(name)}</summary><pre>{_e(json.dumps(data, indent=2))}</pre></details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(results_dir: Path, out: Path | None = None, title: str | None = None) -> Path:
    """Render ``results_dir`` and write the page (default ``<results_dir>/report.html``) atomically."""
    results_dir = Path(results_dir)
    out = Path(out) if out else results_dir / "report.html"
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    write_text(out, render(results_dir, title))
    return out


# ----------------------------------------------------------------------------- CLI plug-in


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="write one self-contained HTML page (tables, figures, run metadata) for a results folder")
    p.add_argument("results_dir", metavar="RESULTS_DIR",
                   help="folder holding metrics.json / compare.json / ablation.json, run.json and PNG figures")
    p.add_argument("--out", metavar="FILE", help="output HTML file (default RESULTS_DIR/report.html)")
    p.add_argument("--title", help="page title (default: 'flowcs report — <experiment>')")


def run(args: argparse.Namespace) -> int:
    out = write_report(Path(args.results_dir), Path(args.out) if args.out else None, args.title)
    print(f"written {out}")
    return 0


__all__ = ["collect", "render", "write_report", "policy_table", "results_section", "run_section", "figure_html",
           "is_results_payload", "add_parser", "run"]
