"""``flowcs compare EXPERIMENT --policies flow,random,loupe,dps,adps,ads``: every policy in one table.

For a trained experiment run directory (the task model and the flow policy exist), this

1. trains the learned peers that are missing, as resumable stages ``compare-<peer>-<budget>.pt`` in the
   *same* run directory, against the *same* frozen task model, the same training split and the same first
   measurement protocol as the flow policy (LOUPE / DPS / A-DPS: one model per budget by default, as in their
   papers; ADS: one flow-matching image prior ``compare-ads-prior.pt``);
2. evaluates every policy with the experiment's own evaluation (:func:`flowcs.evaluation.evaluate`, the same
   setup, draws and metrics as ``flowcs evaluate``): the first measurement, the measurement noise and the
   evaluation seeds are shared by all policies (paired comparison), and the experiment's own rows equal its
   ``metrics.json`` rows on the same test images and seeds;
3. writes ``<results>/compare.json`` (SPEC §9 schema, every policy under ``policies``), ``compare.md`` and
   ``compare.png``, with what was trained per budget, the decision time per acquired location of every policy
   and the wall times.

The comparison's settings are the ``compare:`` section of the experiment's configuration (``--set compare.KEY=V``,
``--compare-config FILE`` for that section alone).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import torch

from ..cli_common import add_run_args, context_from_args
from ..config import load_yaml, to_dict
from ..errors import ConfigError
from ..evaluation import figures
from ..evaluation.loop import Entry, evaluate
from ..evaluation.tables import markdown_table
from ..io import write_json, write_text
from ..policies.ads import FlowPriorObjective
from ..policies.base import Policy
from ..policies.peers import PEERS, PerBudgetPolicy, ads_signature, make_ads, make_peer, peer_signature, trained_note
from ..policies.training import PeerObjective
from ..training.stages import train_or_load
from . import get_experiment
from .compare_report import compare_markdown, compare_payload
from .context import RunContext

__all__ = ["add_parser", "run", "compare", "parse_policies"]


def _fingerprint_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def parse_policies(text: str | None, default: list[str], allowed: list[str]) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()] if text else list(default)
    unknown = [p for p in names if p not in allowed]
    if unknown:
        raise ConfigError(f"unknown policy {', '.join(unknown)} for this experiment; choose from {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"policy listed twice in {','.join(names)}")
    return names


def _peer_batches(setup):
    def batch_fn(idx, gen):
        x, y = setup.train.batch(idx, gen)
        return {"x": x, "y": y}

    return batch_fn


def _first_fn(setup):
    return lambda x, generator: setup.first.acquired(x.shape[0], setup.operator.n_locations, generator, x.device)


def train_peer(ctx: RunContext, setup, name: str, task_fp: str, log: dict) -> Policy:
    """Train (or load) LOUPE / DPS / A-DPS against the frozen task; one model per budget unless per_budget=False."""
    cfg = getattr(ctx.cfg.compare, name)
    if cfg.per_budget:
        keys = [(f"k{b}", b, [b]) for b in setup.budgets]
    else:
        keys = [("range", list(setup.flow_rates), list(setup.budgets))]
    trained: dict[int, Policy] = {}
    for key, budget, covers in keys:
        torch.manual_seed(ctx.seed)
        peer = make_peer(name, setup.operator, cfg, ctx.seed).to(ctx.device)
        objective = PeerObjective(peer, setup.task, setup.operator, _first_fn(setup),
                                  budget if isinstance(budget, int) else tuple(budget), setup.noisy).to(ctx.device)
        stage = f"compare-{name}-{key}"
        sig = peer_signature(setup.experiment, name, setup.operator, budget, cfg, setup.first.count, setup.noisy,
                             task_fp)
        ckpt = train_or_load(ctx, stage, objective, _peer_batches(setup), setup.train.n_items, cfg.loop, sig, peer,
                             "peer.", log)
        log[stage]["task_fingerprint"] = ckpt["signature"].get("task")
        for b in covers:
            trained[b] = peer
    return PerBudgetPolicy(name, trained, setup.operator.n_locations)


def train_ads(ctx: RunContext, setup, log: dict):
    a = ctx.cfg.compare.ads
    shift, scale = setup.prior_shift_scale
    torch.manual_seed(ctx.seed)
    net, policy = make_ads(setup.operator, a, shift, scale)
    net.to(ctx.device)

    def batch_fn(idx, gen):
        x, _ = setup.train.batch(idx, gen)
        return {"x": x}

    sig = ads_signature(setup.experiment, setup.operator, a, shift, scale)
    train_or_load(ctx, "compare-ads-prior", FlowPriorObjective(net), batch_fn, setup.train.n_items, a.loop,
                         sig, net, "model.", log)
    log["compare-ads-prior"]["task_fingerprint"] = None  # task-agnostic: trained on images alone
    return policy


def compare(ctx: RunContext, policies_arg: str | None = None) -> dict:
    started = time.time()
    cc = ctx.cfg.compare
    exp = get_experiment(ctx.experiment)
    setup = exp.setup(ctx, train=True)
    setup.test = setup.test.head(cc.test_subset)
    own = exp.entries(ctx, setup)
    own_names = ["flow", *[n for n in own if n != "flow"]]
    names = parse_policies(policies_arg, list(cc.policies) or [*own_names, *PEERS], [*own_names, *PEERS])
    task_fp = _fingerprint_files(setup.task_files)
    training_log: dict[str, dict] = {}
    n_test = len(setup.test)
    n_ads = n_test if cc.ads.test_images is None else min(cc.ads.test_images, n_test)
    entries: dict[str, Entry] = {}
    for name in names:
        if name in own:
            e = own[name]
            entries[name] = Entry(e.policy, e.reuse_first, None, e.draw_name)
        elif name == "ads":
            entries[name] = Entry(train_ads(ctx, setup, training_log), max_samples=n_ads,
                                  max_seeds=cc.ads.seeds)
        else:
            entries[name] = Entry(train_peer(ctx, setup, name, task_fp, training_log))
    train_s = time.time() - started
    t_eval = time.time()
    seeds = cc.seeds or ctx.cfg.eval.seeds
    res = evaluate(setup, entries, exp.draws(ctx), seeds, cc.batch_size or ctx.cfg.eval.batch_size, ctx.device,
                   desc="compare")
    eval_s = time.time() - t_eval
    notes = {n: trained_note(n, getattr(getattr(cc, n, None), "per_budget", None), len(setup.budgets),
                             setup.flow_rates, setup.budget_unit != "acceleration") for n in names}
    payload = compare_payload(setup, cc, names, res, n_ads, notes, training_log, task_fp,
                              {"training_s": round(train_s, 1), "evaluation_s": round(eval_s, 1),
                               "total_s": round(time.time() - started, 1)})
    if ctx.dist.is_main:
        out = ctx.results_dir
        write_json(out / "compare.json", payload)
        write_text(out / "compare.md", compare_markdown(payload))
        write_json(out / "compare.run.json", ctx.metadata(compare_config=to_dict(cc), policies=names))
        figures.plot_metric_vs_budget(payload, out / "compare.png", scale=setup.table_scale,
                                      ylabel=_metric_label(setup.primary, setup.table_scale), xlabel=_xlabel(setup))
    return payload


def _metric_label(metric: str, scale: float) -> str:
    return {"accuracy": "accuracy (%)" if scale == 100 else "accuracy", "mae": "MAE", "psnr": "PSNR (dB)",
            "ssim": "SSIM", "nmse": "NMSE"}.get(metric, metric)


def _xlabel(setup) -> str:
    return {"percent": "policy budget (% of pixels)", "pixels": "policy budget (pixels)",
            "acceleration": "acceleration (x, LF band inside the budget)"}[setup.budget_unit]


# ----------------------------------------------------------------------------- command line


def add_parser(subparsers) -> argparse.ArgumentParser:
    """``flowcs compare``: register the sub-command (the run arguments of every experiment command + its own)."""
    p = subparsers.add_parser(
        "compare", help="train the peer policies (LOUPE, DPS, A-DPS, ADS) of a trained experiment and compare "
                        "every policy in one table (compare.json / .md / .png)")
    add_run_args(p)
    p.add_argument("--policies", metavar="LIST",
                   help="comma-separated policies (default: all that apply; pixel: flow,random,random-same-total,"
                        f"{','.join(PEERS)}; MRI: flow,random,equispaced,variable-density,low-frequency,"
                        f"{','.join(PEERS)})")
    p.add_argument("--compare-config", metavar="FILE",
                   help="YAML with comparison settings (the keys of the config's compare: section: seeds, "
                        "test_subset, loupe, dps, adps, ads...); single values also via --set compare.KEY=VALUE")
    return p


def run(args) -> int:
    """Entry point of ``flowcs compare`` (returns the exit code)."""
    extra = {"compare": load_yaml(args.compare_config)} if args.compare_config else None
    ctx = context_from_args(args, use_run_config=True, extra=extra, lock="existing")
    payload = compare(ctx, args.policies)
    scale = 100.0 if payload["metric"] == "accuracy" else 1.0
    if ctx.dist.is_main:
        print(markdown_table(payload, scale) + f"written {ctx.results_dir / 'compare.json'}")
    return 0
