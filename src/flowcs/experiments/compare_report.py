"""What ``flowcs compare`` writes: the ``compare.json`` payload (SPEC §9 schema plus training, timing and the
ordering check) and its Markdown page."""

from __future__ import annotations

import torch

from ..config import to_dict
from ..evaluation.results import Results, paired_difference, seed_row
from ..evaluation.tables import markdown_table, metrics_payload
from ..policies.ads import round_sizes

__all__ = ["compare_payload", "compare_markdown", "ordering_check", "seed_rows", "paired_vs_flow"]


def seed_rows(res: Results, metric: str, names: list[str], budgets, n_seeds: int | None = None,
              indices: torch.Tensor | None = None, subset_only: frozenset = frozenset()) -> dict:
    """:func:`seed_row` of every policy on the first ``n_seeds`` seeds; ``indices`` restricts the samples, except
    for the policies in ``subset_only``, which were evaluated on that subset only."""
    rows = {}
    for name in names:
        runs = [{name: d} for d in res.per_seed(metric, name)][:n_seeds]
        rows[name] = seed_row(runs, name, budgets, None if name in subset_only else indices)
    return rows


def compare_payload(setup, cc, names: list[str], res: Results, n_ads: int, notes: dict, training_log: dict,
                    task_fp: str, wall: dict) -> dict:
    budgets = setup.budgets
    metrics = [m for m in res.metrics if setup.table_metrics is None or m in setup.table_metrics]
    n_test = len(setup.test)
    ads_seeds = min(cc.ads.seeds, len(res.per_seed(metrics[0], names[0])))
    ads = frozenset({"ads"})

    def rows_for(metric: str) -> dict:
        rows = {}
        for name in names:
            n_seeds = ads_seeds if name == "ads" else None
            row = seed_rows(res, metric, [name], budgets, n_seeds)[name]
            row["trained"] = notes[name]
            if name == "ads":
                row["note"] = f"first {n_ads} test images, {ads_seeds} seed(s)"
            rows[name] = row
        return rows

    n_seeds = len(res.per_seed(metrics[0], names[0]))
    payload = metrics_payload(
        setup.experiment, setup.primary, setup.higher_is_better, setup.budget_unit, setup.budget_values,
        rows_for(setup.primary),
        extra_metrics={m: rows_for(m) for m in metrics if m != setup.primary},
        budget_locations=budgets, first_locations=setup.first.count, first_measurement=_first_note(setup),
        total_locations=[b + setup.first.count for b in budgets],
        seeds=n_seeds, test_images=n_test, split=setup.test.split, selected_on="val", protocol=setup.protocol,
        data={"train": setup.train.source if setup.train else None, "test": setup.test.source},
        trained_per_budget=notes,
        task={"checkpoints": [str(p) for p in setup.task_files], "fingerprint": task_fp, "frozen": True,
              "peers_trained_against": {k: v.get("task_fingerprint") for k, v in training_log.items()}},
        training=training_log,
        decision_time_ms={n: res.timing[n].as_dict() for n in names},
        wall_time_s=wall,
        config=to_dict(cc),
        notes=(f"Every policy's mask is read by the same frozen task model "
               f"({', '.join(p.name for p in setup.task_files)}); "
               f"{_first_note(setup)}. mean = mean over evaluation seeds of the per-seed mean, std_seeds = spread "
               "across seeds, ci95 = bootstrap 95 % interval over the per-image values. LOUPE/DPS/A-DPS use their "
               "deterministic test mode unless config says 'sample'. ADS is "
               "evaluated on a subset (see 'ads'); the 'subsets' block compares every policy on that subset. "
               "decision_time_ms: wall time of propose_many (masks for every budget) per image and per acquired "
               "location of the largest budget, measured in this run on this CPU."),
    )
    if "ads" in names:
        payload["ads"] = {"test_images": n_ads, "seeds": ads_seeds, "samples": cc.ads.samples,
                          "euler_steps": cc.ads.steps, "locations_per_round": cc.ads.per_round,
                          "rounds_to_largest_budget": len(round_sizes(budgets, cc.ads.per_round)),
                          "prior": {"widths": list(cc.ads.widths), "time_dim": cc.ads.time_dim}}
    if "ads" in names and n_ads < n_test:
        idx = torch.arange(n_ads)
        payload["subsets"] = {f"first{n_ads}": {
            "indices": f"test images 0..{n_ads - 1}", "seeds": ads_seeds,
            "policies": seed_rows(res, setup.primary, names, budgets, ads_seeds, idx, ads),
            "extra_metrics": {m: seed_rows(res, m, names, budgets, ads_seeds, idx, ads)
                              for m in metrics if m != setup.primary}}}
    if "flow" in names:
        payload["paired_vs_flow"] = paired_vs_flow(res, setup.primary, names, budgets, setup.higher_is_better,
                                                   n_ads, ads_seeds)
    payload["ordering"] = ordering_check(payload)
    for sub in (payload.get("subsets") or {}).values():
        # ADS saw only this subset: the like-for-like check of the groups is on the same images
        sub["ordering"] = ordering_check({**payload, "policies": sub["policies"]})
    return payload


def paired_vs_flow(res: Results, metric: str, names: list[str], budgets, higher_is_better: bool, n_ads: int,
                   ads_seeds: int) -> dict:
    """Flow − every other policy on the same test images, seeds and first measurements, per budget
    (:func:`~flowcs.evaluation.results.paired_difference`); ADS on its subset and seeds only."""
    out = {"metric": metric, "note": "diff = flow - policy, mean over images of the per-image difference "
                                     "(averaged over seeds); ci95 = bootstrap over images; tie = ci95 contains 0",
           "policies": {}}
    for name in names:
        if name == "flow":
            continue
        rows = []
        for b in budgets:
            theirs = res.values[metric][name][b]
            ours = res.values[metric]["flow"][b]
            if name == "ads":
                theirs = theirs[:ads_seeds, :n_ads]
                ours = ours[:theirs.shape[0], :theirs.shape[1]]
            rows.append(paired_difference(ours, theirs, higher_is_better))
        out["policies"][name] = {"diff": [r["diff"] for r in rows], "ci95": [r["ci95"] for r in rows],
                                 "verdict": [r["verdict"] for r in rows], "n": rows[0]["n"]}
    return out


def _first_note(setup) -> str:
    k0 = setup.first.count
    if setup.budget_unit == "acceleration":
        total = setup.budgets[0] + k0
        return (f"lowfreq-first: the central {k0} of {setup.operator.n_locations} k-space lines are acquired first "
                f"and count inside the budget ({total} lines at {setup.budget_values[0]:g}x: {setup.budgets[0]} "
                f"chosen by the policy)")
    return (f"random-first: {k0} uniformly random pixels measured first, kept by every policy except "
            f"'random' (total = budget + {k0})")


def ordering_check(payload: dict) -> dict:
    """Does adaptive (A-DPS, ADS) ≥ non-adaptive (LOUPE, DPS) ≥ random hold per budget (primary metric)?"""
    pol = payload["policies"]
    sign = 1.0 if payload["higher_is_better"] else -1.0
    rand = "random-same-total" if "random-same-total" in pol else "random"
    groups = {"adaptive": [p for p in ("adps", "ads") if p in pol],
              "non-adaptive": [p for p in ("loupe", "dps") if p in pol], "random": [rand] if rand in pol else []}
    out = {}
    for i, b in enumerate(payload["budgets"]):
        best = {g: max((sign * pol[p]["mean"][i] for p in ps), default=None) for g, ps in groups.items()}
        checks = {}
        if best["adaptive"] is not None and best["non-adaptive"] is not None:
            checks["adaptive>=non-adaptive"] = best["adaptive"] >= best["non-adaptive"]
        if best["non-adaptive"] is not None and best["random"] is not None:
            checks["non-adaptive>=random"] = best["non-adaptive"] >= best["random"]
        out[str(b)] = checks
    return {"reference": rand, "groups": groups, "per_budget": out,
            "note": "best policy of each group compared on the primary metric (group best vs group best)"}


def compare_markdown(p: dict) -> str:
    scale = 100.0 if p["metric"] == "accuracy" else 1.0
    digits = {"accuracy": 2, "mae": 4, "psnr": 2, "ssim": 4, "nmse": 4}
    lines = [f"# {p['experiment']}: every policy, one table\n", f"{p['protocol']}.\n", f"{p['first_measurement']}.\n",
             f"Budgets ({p['budget_unit']}): {p['budgets']} = {p['budget_locations']} locations chosen by the policy; "
             f"{p['test_images']} {'validation' if p.get('split') == 'val' else 'test'} images, "
             f"{p['seeds']} evaluation seed(s).\n"]

    def table(title: str, metric: str, rows: dict) -> None:
        lines.append(f"## {title}\n")
        lines.append(markdown_table({**p, "policies": rows}, scale if metric == "accuracy" else 1.0,
                                    digits.get(metric, 3), metric))

    hib = "higher" if p["higher_is_better"] else "lower"
    table(f"{p['metric']} ({hib} is better)", p["metric"], p["policies"])
    for m, rows in p.get("extra_metrics", {}).items():
        table(m, m, rows)
    for name, sub in (p.get("subsets") or {}).items():
        table(f"{name} (every policy on the ADS subset, {sub['seeds']} seed(s)): {p['metric']}", p["metric"],
              sub["policies"])
    lines.append("## What was trained per budget\n")
    lines.append("| policy | training |\n|---|---|")
    lines += [f"| {n} | {t} |" for n, t in p["trained_per_budget"].items()]
    lines.append("")
    lines.append("## Decision time (this run, this CPU)\n")
    lines.append("| policy | ms per image (all budgets) | ms per acquired location | images |\n|---|---|---|---|")
    for n, t in p["decision_time_ms"].items():
        lines.append(f"| {n} | {t['ms_per_image']:.2f} | {t['ms_per_location']:.3f} | {t['images']} |")
    lines.append("")
    if p.get("ads"):
        a = p["ads"]
        lines.append(f"ADS: {a['samples']} posterior samples x {a['euler_steps']} Euler steps per round, "
                     f"{a['locations_per_round']} location(s) per round, {a['rounds_to_largest_budget']} rounds to "
                     f"the largest budget, on {a['test_images']} test images x {a['seeds']} seed(s).\n")
    if p.get("paired_vs_flow"):
        pv = p["paired_vs_flow"]
        d = digits.get(pv["metric"], 3)
        lines.append(f"## Paired: flow − policy on {pv['metric']} (same images and seeds; 95 % bootstrap interval "
                     f"over images; a tie when it contains 0)\n")
        lines.append("| policy | " + " | ".join(str(b) for b in p["budgets"]) + " | images |")
        lines.append("|---" * (len(p["budgets"]) + 2) + "|")
        for name, r in pv["policies"].items():
            cells = [f"{scale * x:+.{d}f} [{scale * lo:+.{d}f}, {scale * hi:+.{d}f}] {v}"
                     for x, (lo, hi), v in zip(r["diff"], r["ci95"], r["verdict"])]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['n']} |")
        lines.append("")
    blocks = [("all test images (ADS: its subset)", p["ordering"])]
    blocks += [(f"{name} (every policy on the same images)", sub["ordering"])
               for name, sub in (p.get("subsets") or {}).items() if "ordering" in sub]
    for title, o in blocks:
        lines.append(f"## Ordering check, {title}: group best on {p['metric']}, random reference {o['reference']}\n")
        for b, checks in o["per_budget"].items():
            txt = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()) or "n/a"
            lines.append(f"- budget {b}: {txt}")
        lines.append("")
    lines.append(f"Wall time: {p['wall_time_s']}.\n")
    return "\n".join(lines)
