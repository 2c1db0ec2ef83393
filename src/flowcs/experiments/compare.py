"""``flowcs compare EXPERIMENT --policies flow,random,loupe,dps,adps,ads``: every policy in one table.

For a trained experiment run directory (the task model and the flow policy exist), this

1. trains the learned peers that are missing, as resumable stages ``compare-<peer>-<budget>.pt`` in the
   *same* run directory, against the *same* frozen task model, the same training split and the same first
   measurement protocol as the flow policy (LOUPE / DPS / A-DPS: one model per budget by default, as in their
   papers; ADS: one flow-matching image prior ``compare-ads-prior.pt``);
2. evaluates every policy on the experiment's test images, budgets and metrics, with the first measurement,
   the measurement noise and the evaluation seeds shared by all policies (paired comparison);
3. writes ``<results>/compare.json`` (SPEC §9 schema, every policy under ``policies``), ``compare.md`` and
   ``compare.png`` (metric vs budget), with what was trained per budget, the decision time per acquired
   location of every policy (ADS vs flow measured in the same run) and the wall times.

The experiment configuration comes from ``--config`` / ``--set`` exactly as for ``flowcs evaluate`` (so the
run directory's checkpoints are found and checked); the comparison's own settings (:class:`CompareConfig`)
start from a per-experiment preset, then ``--compare-config FILE``, then ``--set compare.KEY=VALUE``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import apply_overrides, from_dict, load_yaml, merge, to_dict
from ..errors import ConfigError, FlowcsError
from ..io import write_json, write_text
from ..masks import random_mask, rate_to_budget
from ..operators.base import Operator
from ..operators.fft import complex_abs
from ..policies.adps import ADPSNet, ADPSPolicy
from ..policies.ads import ADSPolicy, FlowPriorObjective, ImagePriorNet, round_sizes
from ..policies.base import Policy
from ..policies.dps import DPSPolicy
from ..policies.loupe import LOUPEPolicy
from ..policies.random import RandomPolicy
from ..policies.training import PeerObjective, full_measurement, observer
from ..rng import shard_generator
from ..tasks.base import Task
from ..tasks.unet import network_input
from ..training.checkpoint import load_checkpoint
from ..training.loop import LoopConfig, fit
from . import report
from .common import RunContext, markdown_table, metrics_payload, seed_row

__all__ = ["CompareConfig", "PRESETS", "SMOKE", "add_parser", "run", "compare", "build_harness", "PEERS"]

PEERS = ("loupe", "dps", "adps", "ads")
PIXEL_POLICIES = ("flow", "random", "random-same-total", *PEERS)
MRI_POLICIES = ("flow", "random", "equispaced", "variable-density", "low-frequency", *PEERS)
EXPERIMENTS = ("mnist-classify", "mnist-recon", "faces-recon", "mri-4x", "mri-8x")


# ----------------------------------------------------------------------------- configuration


@dataclass
class LOUPEConfig:
    per_budget: bool = True  # one model per budget (the paper); False: one model over the flow's rate range
    prob_slope: float = 5.0
    sample_slope: float = 12.0
    test_mode: str = "topk"  # topk (mode of the conditioned distribution) | sample (exact conditional draw)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=1, batch_size=128, lr=5e-2,
                                                                   steps_per_epoch=300, log_every=25))


@dataclass
class DPSConfig:
    per_budget: bool = True
    tau: float = 1.0  # Gumbel-softmax temperature
    relax: str = "auto"  # softmax (k sequential softmaxes) | sigmoid | auto (softmax for k <= 128)
    test_mode: str = "topk"  # topk | sample (Gumbel top-k draw)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=1, batch_size=128, lr=5e-2,
                                                                   steps_per_epoch=300, log_every=25))


@dataclass
class ADPSConfig:
    per_budget: bool = True
    steps: int = 4  # acquisitions per mask
    tau: float = 1.0
    relax: str = "auto"
    widths: list[int] = field(default_factory=lambda: [16, 32, 32])
    hidden: int = 256
    pool: int = 4
    test_mode: str = "topk"
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=1, batch_size=128, lr=1e-3,
                                                                   steps_per_epoch=400, log_every=25))


@dataclass
class ADSConfig:
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    time_dim: int = 64
    samples: int = 8  # posterior samples per image and round
    steps: int = 8  # Euler steps per posterior sample
    per_round: int = 8  # locations acquired per round (the paper: 1)
    test_images: int | None = 300  # ADS is evaluated on the first n test images (None: all)
    seeds: int = 1  # evaluation seeds for ADS (the first ones of the comparison)
    max_batch: int = 512  # prior evaluations per forward pass
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=1, batch_size=64, lr=2e-3,
                                                                   steps_per_epoch=1500, log_every=50))


@dataclass
class CompareConfig:
    policies: list[str] = field(default_factory=list)  # empty: every policy that applies
    seeds: int | None = None  # evaluation seeds (None: the experiment's eval.seeds)
    test_subset: int | None = None  # evaluate on the first n test images (None: the experiment's test set)
    batch_size: int | None = None  # None: the experiment's eval.batch_size
    loupe: LOUPEConfig = field(default_factory=LOUPEConfig)
    dps: DPSConfig = field(default_factory=DPSConfig)
    adps: ADPSConfig = field(default_factory=ADPSConfig)
    ads: ADSConfig = field(default_factory=ADSConfig)


#: per-experiment defaults (scaled to a 2-core CPU; recorded in compare.json under ``config``)
PRESETS: dict[str, dict] = {
    "mnist-classify": {"seeds": None, "ads": {"samples": 6, "steps": 6, "per_round": 8, "test_images": 200}},
    "mnist-recon": {
        "seeds": 1,
        "loupe": {"loop": {"batch_size": 64, "steps_per_epoch": 200}},
        "dps": {"loop": {"batch_size": 64, "steps_per_epoch": 200}},
        "adps": {"loop": {"batch_size": 64, "steps_per_epoch": 300}},
        "ads": {"widths": [16, 32, 64], "per_round": 50, "test_images": 200, "samples": 6, "steps": 6,
                "loop": {"batch_size": 64, "steps_per_epoch": 1500}},
    },
    "faces-recon": {
        "seeds": 1, "test_subset": 500,
        "loupe": {"loop": {"batch_size": 32, "steps_per_epoch": 150}},
        "dps": {"loop": {"batch_size": 32, "steps_per_epoch": 150}},
        "adps": {"widths": [16, 32, 32], "loop": {"batch_size": 32, "steps_per_epoch": 200}},
        "ads": {"widths": [16, 32, 64], "per_round": 200, "test_images": 64, "samples": 6, "steps": 6,
                "loop": {"epochs": 4, "batch_size": 32, "steps_per_epoch": 300}},
    },
    # MRI: every peer step runs the frozen MoDL (5 unrolls x 8 CG steps) forward and backward: ~8-16 s per
    # batch of 2 on the shared CPU, so the peers get tens of steps (recorded in compare.json)
    "mri-4x": {
        "loupe": {"loop": {"batch_size": 2, "steps_per_epoch": 50, "log_every": 5}},
        "dps": {"loop": {"batch_size": 2, "steps_per_epoch": 50, "log_every": 5}},
        "adps": {"steps": 4, "loop": {"batch_size": 2, "lr": 3e-3, "steps_per_epoch": 60, "log_every": 5}},
        "ads": {"widths": [8, 16, 32], "per_round": 1, "test_images": None, "samples": 6, "steps": 6,
                "max_batch": 64, "loop": {"epochs": 9, "batch_size": 8, "log_every": 20}},  # 46 steps/epoch
    },
    "mri-8x": {
        "loupe": {"loop": {"batch_size": 2, "steps_per_epoch": 40, "log_every": 5}},
        "dps": {"loop": {"batch_size": 2, "steps_per_epoch": 40, "log_every": 5}},
        "adps": {"steps": 3, "loop": {"batch_size": 2, "lr": 3e-3, "steps_per_epoch": 50, "log_every": 5}},
        "ads": {"widths": [8, 16, 32], "per_round": 1, "test_images": None, "samples": 6, "steps": 6,
                "max_batch": 32, "loop": {"epochs": 4, "batch_size": 4, "log_every": 20}},  # 92 steps/epoch
    },
}

#: tiny settings for ``--smoke`` (a couple of minutes on a CPU)
SMOKE: dict = {
    "seeds": 1, "test_subset": 128, "batch_size": 64,
    "loupe": {"loop": {"batch_size": 32, "steps_per_epoch": 6, "log_every": 3}},
    "dps": {"loop": {"batch_size": 32, "steps_per_epoch": 6, "log_every": 3}},
    "adps": {"steps": 2, "widths": [4, 8, 8], "hidden": 32,
             "loop": {"batch_size": 32, "steps_per_epoch": 6, "log_every": 3}},
    "ads": {"widths": [4, 8, 8], "time_dim": 16, "samples": 3, "steps": 2, "per_round": 16, "test_images": 32,
            "loop": {"batch_size": 32, "steps_per_epoch": 8, "log_every": 4}},
}


#: ``--smoke`` on the MRI experiments: MoDL steps are expensive, so batches of 2
SMOKE_MRI: dict = merge(SMOKE, {
    "batch_size": 16, "test_subset": None,
    "loupe": {"loop": {"batch_size": 2, "steps_per_epoch": 2, "log_every": 1}},
    "dps": {"loop": {"batch_size": 2, "steps_per_epoch": 2, "log_every": 1}},
    "adps": {"loop": {"batch_size": 2, "steps_per_epoch": 2, "log_every": 1}},
    "ads": {"per_round": 4, "test_images": 4, "max_batch": 16, "loop": {"batch_size": 4, "steps_per_epoch": 4}},
})


def compare_config(experiment: str, smoke: bool = False, path: str | None = None,
                   overrides: list[str] | None = None) -> CompareConfig:
    raw = to_dict(CompareConfig())
    raw = merge(raw, PRESETS.get(experiment, {}))
    if smoke:
        raw = merge(raw, SMOKE_MRI if experiment.startswith("mri") else SMOKE)
    if path:
        raw = merge(raw, load_yaml(path))
    raw = apply_overrides(raw, overrides or [])
    cc = from_dict(CompareConfig, raw)
    _validate(cc)
    return cc


def _validate(cc: CompareConfig) -> None:
    from ..policies.dps import RELAXATIONS, TEST_MODES

    for name, c in (("loupe", cc.loupe), ("dps", cc.dps), ("adps", cc.adps)):
        if c.test_mode not in TEST_MODES:
            raise ConfigError(f"compare.{name}.test_mode {c.test_mode!r}: choose one of {', '.join(TEST_MODES)}")
    for name, c in (("dps", cc.dps), ("adps", cc.adps)):
        if c.relax not in RELAXATIONS:
            raise ConfigError(f"compare.{name}.relax {c.relax!r}: choose one of {', '.join(RELAXATIONS)}")
        if c.tau <= 0:
            raise ConfigError(f"compare.{name}.tau must be > 0, got {c.tau}")
    if cc.adps.steps < 1:
        raise ConfigError(f"compare.adps.steps must be >= 1, got {cc.adps.steps}")
    a = cc.ads
    if a.samples < 2 or a.steps < 1 or a.per_round < 1 or a.seeds < 1 or a.max_batch < 1:
        raise ConfigError("compare.ads: samples >= 2 and steps, per_round, seeds, max_batch >= 1 are required")
    if cc.seeds is not None and cc.seeds < 1:
        raise ConfigError("compare.seeds must be at least 1")


# ----------------------------------------------------------------------------- the harness of one experiment


@dataclass
class Harness:
    """Everything the comparison needs from an experiment, behind one shape for pixel and k-space sensing."""

    experiment: str
    family: str  # "pixel" | "mri"
    operator: Operator
    task: Task  # frozen
    task_files: list[Path]  # checkpoints of the frozen task (their hash is recorded)
    load_flow: Callable[[], Policy]  # the trained flow policy (loaded only when it is compared)
    n_train: int
    train_batch: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    x_test: torch.Tensor
    y_test: torch.Tensor
    budgets: list[int]  # locations chosen by the policy
    budget_values: list  # as reported (percent / pixels / acceleration)
    budget_unit: str
    first_locations: int  # k0 random pixels or the LF band
    first_note: str
    primary: str
    higher_is_better: bool
    score: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]  # per-sample metrics
    noisy: bool
    flow_rates: tuple[float, float]  # the flow's training rate range (percent of N)
    eval_batch: int
    eval_seeds: int
    seed_base: list[int]
    table_scale: float = 1.0
    images_for_prior: Callable[[torch.Tensor], torch.Tensor] | None = None
    prior_shift_scale: tuple[float, float] = (0.5, 0.5)
    sources: dict = field(default_factory=dict)
    protocol: str = ""
    lf: torch.Tensor | None = None  # MRI: bool (N,) low-frequency band acquired first

    def first(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Bool (B, N) first measurement (the same protocol in training and evaluation)."""
        b = x.shape[0]
        if self.family == "pixel":
            return random_mask(b, self.operator.n_locations, self.first_locations, None, generator, x.device)
        return self.lf.to(x.device).expand(b, -1).clone()

    def condition(self, observe, acquired: torch.Tensor) -> torch.Tensor:
        """The flow policy's condition from the first measurement."""
        zf = observe(acquired)
        if self.family == "pixel":
            return network_input(zf, self.operator.mask_to_image(acquired))
        return complex_abs(zf)


def _fingerprint_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _pixel_budgets(ctx, n):
    from .pixel import budgets_to_pixels

    c = ctx.cfg
    return budgets_to_pixels(c.eval.budgets, c.eval.budget_unit, n), list(c.eval.budgets), c.eval.budget_unit


def build_harness(ctx: RunContext, cc: CompareConfig) -> Harness:
    """Load the frozen task, the trained flow policy and the data splits of ``ctx.experiment``."""
    name = ctx.experiment
    if name not in EXPERIMENTS:
        raise ConfigError(f"compare does not know experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    if name.startswith("mri"):
        return _mri_harness(ctx, cc)
    return _pixel_harness(ctx, cc)


def _tensor_batches(x: torch.Tensor, y: torch.Tensor, device):
    def fn(idx, _gen):
        return x[idx].to(device), y[idx].to(device)

    return fn


def _pixel_harness(ctx: RunContext, cc: CompareConfig) -> Harness:
    from ..tasks.base import ReconstructionTask

    c = ctx.cfg
    name = ctx.experiment
    if name == "mnist-classify":
        from ..metrics import accuracy
        from . import mnist_classify as mc

        task = mc.trained_classifier(ctx)

        def flow():
            return mc.trained_flow(ctx)
        op = mc.OPERATOR
        xtr, ytr, train_src = mc.load_data(ctx, "train")
        xte, yte, test_src = mc.load_data(ctx, "test")
        budgets = [rate_to_budget(r, op.n_locations) for r in c.eval.rates]
        values, unit = list(c.eval.rates), "percent"
        primary, hib, scale = "accuracy", True, 100.0
        task_files = [ctx.checkpoint("classifier")]

        def score(pred, target):
            return {"accuracy": accuracy(pred, target)}

        protocol = "MNIST 28x28, standard 60k/10k split; task: the frozen MLP classifier (stage 'classifier')"
    else:
        from . import faces_recon, mnist_recon
        from .mnist_recon import recon_metrics, trained_recon_unet
        from .pixel import load_flow_policy

        mod = mnist_recon if name == "mnist-recon" else faces_recon
        op = mod.operator_for(c)
        channels = op.image_shape[0]
        sig = mod._signature(ctx)
        unet = trained_recon_unet(ctx, channels, sig)
        make_task = getattr(mnist_recon, "make_task", None)  # task.data_consistency (measured pixels kept)
        task = (make_task(unet, c) if make_task else ReconstructionTask(unet)).freeze()

        def flow():
            return load_flow_policy(ctx, "flow", unet, op, c.flow, sig("flow"))
        if name == "mnist-recon":
            xtr, train_src = mod.load_data(ctx, "train")
            xte, test_src = mod.load_data(ctx, "test")
        else:
            tr, te = mod.load_data(ctx, "train"), mod.load_data(ctx, "test")
            xtr, train_src, xte, test_src = tr.tensor(), tr.source, te.tensor(), te.source
        ytr, yte = xtr, xte
        budgets, values, unit = _pixel_budgets(ctx, op.n_locations)
        primary = "mae" if name == "mnist-recon" else "psnr"
        hib, scale = primary != "mae", 1.0
        task_files = [ctx.checkpoint("unet")]
        metrics = recon_metrics()

        def score(pred, target):
            return {m: fn(pred, target) for m, fn in metrics.items()}

        dc = bool(getattr(getattr(c, "task", None), "data_consistency", False))
        protocol = (f"{name}: frozen reconstruction U-Net (stage 'unet'"
                    f"{', measured pixels kept (task.data_consistency)' if dc else ''}), pixel values in [0, 1]")
    if cc.test_subset:
        xte, yte = xte[:cc.test_subset], yte[:cc.test_subset]
    k0 = c.flow.first_samples
    return Harness(
        experiment=name, family="pixel", operator=op, task=task, task_files=task_files, load_flow=flow,
        n_train=xtr.shape[0], train_batch=_tensor_batches(xtr, ytr, ctx.device), x_test=xte, y_test=yte,
        budgets=budgets, budget_values=values, budget_unit=unit, first_locations=k0,
        first_note=f"random-first: {k0} uniformly random pixels measured first, kept by every policy except "
                   f"'random' (total = budget + {k0})",
        primary=primary, higher_is_better=hib, score=score, noisy=False,
        flow_rates=(c.flow.rate_min, c.flow.rate_max), eval_batch=cc.batch_size or c.eval.batch_size,
        eval_seeds=cc.seeds or c.eval.seeds, seed_base=[ctx.seed * 1000 + s for s in range(cc.seeds or c.eval.seeds)],
        table_scale=scale, sources={"train": train_src, "test": test_src}, protocol=protocol,
        prior_shift_scale=(0.5, 0.5),
    )


def _mri_harness(ctx: RunContext, cc: CompareConfig) -> Harness:
    from ..tasks.modl import MRIReconstructionTask
    from . import mri as M

    c = ctx.cfg
    if c.threads:
        torch.set_num_threads(c.threads)
    setup = M.Setup.from_cfg(c)
    task = M.trained_modl(ctx)
    split = c.eval.split
    splits = M.load_splits(ctx, ("train", split))
    train, test = splits["train"], splits[split]
    if len(train) == 0 or len(test) == 0:
        raise ConfigError(f"{ctx.experiment}: the train or {split} split is empty")
    n_train = len(train)
    repeat = c.modl.repeat

    def train_batch(idx, gen):
        x = M.prepare(train, idx % n_train, c, gen).to(ctx.device)
        return x, x

    xte = M.prepare(test, range(len(test)), c)
    if cc.test_subset:
        xte = xte[:cc.test_subset]

    def score(pred, target):
        return MRIReconstructionTask.metrics(pred.double(), target.double())

    # a rough scale of the normalised complex images for the ADS prior (shift 0)
    sample = M.prepare(train, range(min(n_train, 16)), c)
    std = float(sample.std())
    h = Harness(
        experiment=ctx.experiment, family="mri", operator=setup.operator, task=task,
        task_files=[ctx.checkpoint("modl")], load_flow=lambda: M.trained_flow(ctx), n_train=n_train * repeat,
        train_batch=train_batch,
        x_test=xte, y_test=xte, budgets=[setup.k], budget_values=[c.mri.acceleration],
        budget_unit="acceleration", first_locations=setup.n_lf,
        first_note=(f"lowfreq-first: the central {setup.n_lf} of {setup.size} k-space lines are acquired first and "
                    f"count inside the budget ({setup.total} lines at {c.mri.acceleration:g}x: "
                    f"{setup.k} chosen by the policy)"),
        primary="ssim", higher_is_better=True, score=score, noisy=c.mri.noise_pct > 0,
        flow_rates=(100.0 * setup.k / setup.size,) * 2, eval_batch=cc.batch_size or c.eval.batch_size,
        eval_seeds=cc.seeds or c.eval.seeds, seed_base=list(range(cc.seeds or c.eval.seeds)),
        sources={"train": train.describe(), "test": test.describe()},
        protocol=(f"{ctx.experiment}: {setup.size}x{setup.size} normalised complex images, k-space noise "
                  f"{c.mri.noise_pct:g}% per channel, frozen MoDL (stage 'modl'); SSIM/PSNR/NMSE of magnitudes "
                  f"per slice (data range = slice max)"),
        prior_shift_scale=(0.0, std),
    )
    h.lf = setup.lf
    return h


# ----------------------------------------------------------------------------- training the peers


def _stage_done(path: Path, stage: str, signature: dict) -> dict | None:
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path, stage, signature)  # a mismatch is an error naming the file
    return ckpt if ckpt.get("done") else None


def _load_module(module: nn.Module, ckpt: dict, prefix: str) -> None:
    state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    module.load_state_dict(state)


def _train_stage(ctx: RunContext, stage: str, objective: nn.Module, batch_fn, n_items: int, loop: LoopConfig,
                 signature: dict, log: dict, prefix: str, module: nn.Module) -> None:
    path = ctx.checkpoint(stage)
    t0 = time.time()
    if _stage_done(path, stage, signature) is None:
        torch.manual_seed(ctx.seed)
        fit(objective, batch_fn, n_items, loop, out_dir=ctx.run_dir, name=stage, signature=signature,
            seed=ctx.seed, device=ctx.device, resume=True, desc=stage)
        log[stage] = {"trained_s": round(time.time() - t0, 1)}
    else:
        log[stage] = {"trained_s": 0.0, "note": "already trained (loaded)"}
    ckpt = load_checkpoint(path, stage, signature)
    _load_module(module, ckpt, prefix)
    module.eval()
    log[stage].update(steps=int(ckpt["global_step"]), task_fingerprint=ckpt["signature"]["task"])


class PerBudgetPolicy(Policy):
    """One trained policy per budget (LOUPE / DPS / A-DPS as in their papers) behind one interface."""

    def __init__(self, name: str, per_budget: dict[int, Policy], n_locations: int):
        super().__init__(n_locations)
        self.name, self.policies = name, per_budget
        any_pol = next(iter(per_budget.values()))
        self.adaptive, self.sequential = any_pol.adaptive, any_pol.sequential

    def _pick(self, budget: int) -> Policy:
        if budget in self.policies:
            return self.policies[budget]
        if len(self.policies) == 1:
            return next(iter(self.policies.values()))
        raise ConfigError(f"{self.name}: no model was trained for a budget of {budget} locations")

    def _new_locations(self, condition, budget, acquired, generator, observe=None):
        pol = self._pick(budget)
        return pol.propose(condition, budget, acquired, generator, observe) & ~acquired


def _peer_signature(h: Harness, name: str, budget, cfg, task_fp: str) -> dict:
    shape = {k: v for k, v in to_dict(cfg).items() if k not in ("loop", "test_mode")}
    loop = to_dict(cfg.loop)
    shape["loop"] = {k: loop[k] for k in ("epochs", "batch_size", "lr", "steps_per_epoch")}
    return {"experiment": h.experiment, "peer": name, "n_locations": h.operator.n_locations,
            "sampling": "operator" if name == "loupe" else "linear",
            "image_shape": list(h.operator.image_shape), "budget": budget, "first_locations": h.first_locations,
            "noisy": h.noisy, "task": task_fp, **shape}


def _make_peer(name: str, h: Harness, cfg, seed: int):
    n = h.operator.n_locations
    if name == "loupe":
        return LOUPEPolicy(n, cfg.prob_slope, cfg.sample_slope, cfg.test_mode, seed)
    if name == "dps":
        return DPSPolicy(n, cfg.tau, cfg.relax, cfg.test_mode, seed)
    net = ADPSNet(h.operator.image_shape[0], n, cfg.widths, cfg.hidden, cfg.pool)
    return ADPSPolicy(net, h.operator, cfg.steps, cfg.tau, cfg.relax, cfg.test_mode)


def train_peer(ctx: RunContext, h: Harness, cc: CompareConfig, name: str, task_fp: str, log: dict) -> Policy:
    """Train (or load) LOUPE / DPS / A-DPS against the frozen task; one model per budget unless per_budget=False."""
    cfg = getattr(cc, name)

    def batch_fn(idx, gen):
        x, y = h.train_batch(idx, gen)
        return {"x": x, "y": y}

    keys: list[tuple[str, Any, list[int]]]
    if cfg.per_budget:
        keys = [(f"k{b}", b, [b]) for b in h.budgets]
    else:
        lo, hi = h.flow_rates
        keys = [("range", [lo, hi], list(h.budgets))]
    trained: dict[int, Policy] = {}
    for key, budget, covers in keys:
        torch.manual_seed(ctx.seed)
        peer = _make_peer(name, h, cfg, ctx.seed).to(ctx.device)
        objective = PeerObjective(peer, h.task, h.operator, h.first,
                                  budget if isinstance(budget, int) else tuple(budget), h.noisy).to(ctx.device)
        stage = f"compare-{name}-{key}"
        _train_stage(ctx, stage, objective, batch_fn, h.n_train, cfg.loop,
                     _peer_signature(h, name, budget, cfg, task_fp), log, "peer.", peer)
        for b in covers:
            trained[b] = peer
    return PerBudgetPolicy(name, trained, h.operator.n_locations)


def train_ads(ctx: RunContext, h: Harness, cc: CompareConfig, task_fp: str, log: dict) -> ADSPolicy:
    a = cc.ads
    shift, scale = h.prior_shift_scale
    torch.manual_seed(ctx.seed)
    net = ImagePriorNet(h.operator.image_shape[0], a.widths, a.time_dim, shift, scale).to(ctx.device)

    def batch_fn(idx, gen):
        x, _ = h.train_batch(idx, gen)
        return {"x": x}

    sig = {"experiment": h.experiment, "peer": "ads-prior", "image_shape": list(h.operator.image_shape),
           "widths": list(a.widths), "time_dim": a.time_dim, "shift": round(shift, 6), "scale": round(scale, 6),
           "loop": {k: to_dict(a.loop)[k] for k in ("epochs", "batch_size", "lr", "steps_per_epoch")},
           # the prior never sees the task; recorded so every peer stage names the task it was compared with
           "task": task_fp}
    _train_stage(ctx, "compare-ads-prior", FlowPriorObjective(net), batch_fn, h.n_train, a.loop, sig, log,
                 "model.", net)
    return ADSPolicy(net, h.operator, a.samples, a.steps, a.per_round, a.max_batch)


# ----------------------------------------------------------------------------- evaluation


def _policy_seed(*parts: int) -> torch.Generator:
    v = 0
    for p in parts:
        v = (v * 1_000_003 + int(p)) % (2**61 - 1)
    return torch.Generator().manual_seed(v)


def _name_code(name: str) -> int:
    return zlib.crc32(name.encode())


MRI_POLICY_INDEX = {"random": 0, "equispaced": 1, "variable-density": 2, "flow": 3,
                    "low-frequency": 4}  # as in mri.evaluate


@dataclass
class Timing:
    seconds: float = 0.0
    images: int = 0
    locations: int = 0  # images x new locations decided (largest budget)

    def as_dict(self) -> dict:
        return {"seconds": round(self.seconds, 3), "images": self.images,
                "ms_per_image": round(1000 * self.seconds / max(self.images, 1), 3),
                "ms_per_location": round(1000 * self.seconds / max(self.locations, 1), 4)}


@torch.inference_mode()
def evaluate_all(h: Harness, policies: dict[str, tuple[Policy, bool]], cc: CompareConfig, ctx: RunContext,
                 ) -> tuple[list[dict], dict[str, Timing], int]:
    """Per-seed per-sample metrics ``[{metric: {policy: {budget: values}}}]`` and decision times.

    Pixel experiments reproduce the generator use of :func:`flowcs.experiments.pixel.evaluate_policies`
    (first measurement, then flow, random, random-same-total from one generator per batch), MRI that of
    :func:`flowcs.experiments.mri.evaluate` (noise and policy seeds), so those rows equal the experiment's own
    metrics.json at the same seeds and test set. Peers draw from their own generators.
    """
    op, budgets = h.operator, h.budgets
    n_test = h.x_test.shape[0]
    n_ads = n_test if cc.ads.test_images is None else min(cc.ads.test_images, n_test)
    timing = {name: Timing() for name in policies}
    per_seed = []
    bs = h.eval_batch
    shared = [n for n in ("flow", "random", "random-same-total") if n in policies]
    for s_i, seed in enumerate(h.seed_base):
        out: dict[str, dict[str, dict[int, list]]] = {}
        for i, start in enumerate(tqdm(range(0, n_test, bs), desc=f"compare seed {s_i}", leave=False)):
            stop = min(start + bs, n_test)
            x = h.x_test[start:stop].to(ctx.device)
            y = h.y_test[start:stop].to(ctx.device)
            if h.family == "pixel":
                gen = shard_generator(seed * 1_000_003 + i, 0, 1, total=stop - start, start=0)
                acquired = h.first(x, gen)
                y_full = full_measurement(op, x)
            else:
                from .mri import _seed

                gen = None
                acquired = h.first(x, None)
                y_full = full_measurement(op, x, h.noisy, _seed(ctx.seed, 1, s_i, start))
            observe = observer(op, y_full)
            cond = h.condition(observe, acquired)
            none = torch.zeros_like(acquired)
            for name, (policy, reuse) in policies.items():
                rows = stop - start
                if name == "ads":
                    if s_i >= cc.ads.seeds or start >= n_ads:
                        continue
                    rows = min(rows, n_ads - start)
                if h.family == "pixel":
                    g = gen if name in shared else _policy_seed(seed, i, _name_code(name))
                else:
                    g = _seed_mri(ctx.seed, s_i, start, name)
                acq = (acquired if reuse else none)[:rows]
                c_in = cond[:rows]
                obs = observe if rows == stop - start else observer(op, y_full[:rows])
                t0 = time.perf_counter()
                masks = policy.propose_many(c_in, budgets, acq, g, observe=obs)
                dt = time.perf_counter() - t0
                timing[name].seconds += dt
                timing[name].images += rows
                timing[name].locations += rows * max(budgets)
                for b, m in masks.items():
                    _check_mask(name, m, acq, b)
                    pred = h.task.predict(obs(m), op.mask_to_image(m))
                    for metric, v in h.score(pred, y[:rows]).items():
                        out.setdefault(metric, {}).setdefault(name, {}).setdefault(b, []).append(v.double().cpu())
        per_seed.append({m: {p: {b: torch.cat(v) for b, v in per.items()} for p, per in rows_.items()}
                         for m, rows_ in out.items()})
    return per_seed, timing, n_ads


def _seed_mri(run_seed: int, s_i: int, start: int, name: str) -> torch.Generator:
    from .mri import _seed

    idx = MRI_POLICY_INDEX.get(name, 100 + _name_code(name) % 1000)
    return _seed(run_seed, 2, s_i, start, idx)


def _check_mask(name: str, mask: torch.Tensor, acquired: torch.Tensor, budget: int) -> None:
    new = (mask & ~acquired).sum(1)
    if not bool((new == budget).all()) or not bool(mask[acquired].all()):
        raise FlowcsError(f"policy {name} returned a mask without exactly {budget} new locations "
                          f"(got {new.tolist()[:5]}...) or dropped acquired ones")


# ----------------------------------------------------------------------------- the comparison


def _baseline(name: str, h: Harness, ctx: RunContext) -> tuple[Policy, bool]:
    n = h.operator.n_locations
    if name == "flow":
        return h.load_flow(), True
    if name == "random":
        return RandomPolicy(n), h.family == "mri"  # pixel: no first measurement, as in the paper
    if name == "random-same-total":
        return RandomPolicy(n), True
    from ..policies.cartesian import EquispacedPolicy, LowFrequencyPolicy, VariableDensityPolicy

    if name == "equispaced":
        return EquispacedPolicy(n), True
    if name == "low-frequency":
        return LowFrequencyPolicy(n), True
    return VariableDensityPolicy(n, ctx.cfg.eval.vd_power), True


def parse_policies(text: str | None, cc: CompareConfig, family: str) -> list[str]:
    allowed = PIXEL_POLICIES if family == "pixel" else MRI_POLICIES
    names = [p.strip() for p in text.split(",") if p.strip()] if text else list(cc.policies) or list(allowed)
    unknown = [p for p in names if p not in allowed]
    if unknown:
        raise ConfigError(f"unknown policy {', '.join(unknown)} for this experiment; choose from {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"policy listed twice in {','.join(names)}")
    return names


def _trained_note(h: Harness, cc: CompareConfig, name: str) -> str:
    lo, hi = h.flow_rates
    if name == "flow":
        return (f"one model for every budget (trained over rates {lo:g}-{hi:g} % of the locations)"
                if h.family == "pixel" else "one model at the experiment's fixed budget")
    if name in ("loupe", "dps", "adps"):
        cfg = getattr(cc, name)
        if cfg.per_budget:
            return f"one model per budget ({len(h.budgets)} models, as in the paper)"
        return f"one model for every budget (rates {lo:g}-{hi:g} %, sampled per batch)"
    if name == "ads":
        return "one image prior (flow matching, task-agnostic) for every budget; no mask training"
    return "not trained"


def compare(ctx: RunContext, cc: CompareConfig, policies_arg: str | None = None) -> dict:
    if ctx.dist.enabled:
        raise ConfigError("flowcs compare runs in one process (start it without torchrun)")
    started = time.time()
    h = build_harness(ctx, cc)
    names = parse_policies(policies_arg, cc, h.family)
    task_fp = _fingerprint_files(h.task_files)
    training_log: dict[str, dict] = {}
    policies: dict[str, tuple[Policy, bool]] = {}
    for name in names:
        if name not in PEERS:
            policies[name] = _baseline(name, h, ctx)
        elif name == "ads":
            policies[name] = (train_ads(ctx, h, cc, task_fp, training_log), True)
        else:
            policies[name] = (train_peer(ctx, h, cc, name, task_fp, training_log), True)
    train_s = time.time() - started
    t_eval = time.time()
    per_seed, timing, n_ads = evaluate_all(h, policies, cc, ctx)
    eval_s = time.time() - t_eval
    payload = _payload(ctx, h, cc, names, per_seed, timing, n_ads, training_log, task_fp,
                       {"training_s": round(train_s, 1), "evaluation_s": round(eval_s, 1),
                        "total_s": round(time.time() - started, 1)})
    out = ctx.results_dir
    write_json(out / "compare.json", payload)
    write_text(out / "compare.md", compare_markdown(payload))
    write_json(out / "compare.run.json", ctx.metadata(compare_config=to_dict(cc), policies=names))
    scale = h.table_scale
    report.plot_metric_vs_budget(payload, out / "compare.png", scale=scale,
                                 ylabel=_metric_label(h.primary, scale), xlabel=_xlabel(h))
    return payload


def _metric_label(metric: str, scale: float) -> str:
    return {"accuracy": "accuracy (%)" if scale == 100 else "accuracy", "mae": "MAE", "psnr": "PSNR (dB)",
            "ssim": "SSIM", "nmse": "NMSE"}.get(metric, metric)


def _xlabel(h: Harness) -> str:
    return {"percent": "policy budget (% of pixels)", "pixels": "policy budget (pixels)",
            "acceleration": "acceleration (x, LF band inside the budget)"}[h.budget_unit]


def _payload(ctx, h: Harness, cc: CompareConfig, names, per_seed, timing, n_ads, training_log, task_fp,
             wall) -> dict:
    budgets = h.budgets
    metrics = list(per_seed[0].keys())
    ads_runs = per_seed[:cc.ads.seeds]

    def rows_for(metric: str, indices: torch.Tensor | None = None) -> dict:
        rows = {}
        for name in names:
            runs = ads_runs if name == "ads" else per_seed
            row = seed_row([r[metric] for r in runs], name, budgets, None if name == "ads" else indices)
            row["trained"] = _trained_note(h, cc, name)
            if name == "ads":
                row["note"] = f"first {n_ads} test images, {len(ads_runs)} seed(s)"
            rows[name] = row
        return rows

    n_test = h.x_test.shape[0]
    sub_idx = torch.arange(n_ads)
    payload = metrics_payload(
        h.experiment, h.primary, h.higher_is_better, h.budget_unit, h.budget_values, rows_for(h.primary),
        extra_metrics={m: rows_for(m) for m in metrics if m != h.primary},
        budget_locations=budgets, first_locations=h.first_locations, first_measurement=h.first_note,
        total_locations=[b + h.first_locations for b in budgets],
        seeds=len(per_seed), test_images=n_test, protocol=h.protocol, data=h.sources,
        trained_per_budget={n: _trained_note(h, cc, n) for n in names},
        task={"checkpoints": [str(p) for p in h.task_files], "fingerprint": task_fp, "frozen": True,
              "peers_trained_against": {k: v.get("task_fingerprint") for k, v in training_log.items()}},
        training=training_log,
        decision_time_ms={n: timing[n].as_dict() for n in names},
        wall_time_s=wall,
        config=to_dict(cc),
        notes=(f"Every policy's mask is read by the same frozen task model "
               f"({', '.join(p.name for p in h.task_files)}); "
               f"{h.first_note}. mean = mean over evaluation seeds of the per-seed mean, std = spread across seeds. "
               "LOUPE/DPS/A-DPS use their deterministic test mode unless config says 'sample'. ADS is evaluated "
               "on a subset (see 'ads'); the 'subsets' block compares every policy on that subset. "
               "decision_time_ms: wall time of propose_many (masks for every budget) per image and per acquired "
               "location of the largest budget, measured in this run on this CPU."),
    )
    if "ads" in names:
        payload["ads"] = {"test_images": n_ads, "seeds": len(ads_runs), "samples": cc.ads.samples,
                          "euler_steps": cc.ads.steps, "locations_per_round": cc.ads.per_round,
                          "rounds_to_largest_budget": len(round_sizes(budgets, cc.ads.per_round)),
                          "prior": {"widths": list(cc.ads.widths), "time_dim": cc.ads.time_dim}}
    if "ads" in names and n_ads < n_test:
        payload["subsets"] = {f"first{n_ads}": {
            "indices": f"test images 0..{n_ads - 1}", "seeds": len(ads_runs),
            "policies": _subset_rows(h.primary, names, ads_runs, budgets, sub_idx, h, cc),
            "extra_metrics": {m: _subset_rows(m, names, ads_runs, budgets, sub_idx, h, cc)
                              for m in metrics if m != h.primary}}}
    payload["ordering"] = ordering_check(payload)
    for sub in (payload.get("subsets") or {}).values():
        # ADS saw only this subset: the like-for-like check of the groups is on the same images
        sub["ordering"] = ordering_check({**payload, "policies": sub["policies"]})
    return payload


def _subset_rows(metric, names, runs, budgets, idx, h, cc) -> dict:
    rows = {}
    for name in names:
        rows[name] = seed_row([r[metric] for r in runs], name, budgets, None if name == "ads" else idx)
    return rows


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
             f"{p['test_images']} test images, {p['seeds']} evaluation seed(s).\n"]

    def table(title: str, metric: str, rows: dict) -> None:
        lines.append(f"## {title}\n")
        lines.append(markdown_table({**p, "policies": rows}, scale if metric == "accuracy" else 1.0,
                                    digits.get(metric, 3)))

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


# ----------------------------------------------------------------------------- command line


def add_parser(subparsers) -> argparse.ArgumentParser:
    """``flowcs compare``: register the sub-command (the run arguments of every experiment command + its own)."""
    from ..cli import _add_run_args

    p = subparsers.add_parser(
        "compare", help="train the peer policies (LOUPE, DPS, A-DPS, ADS) of a trained experiment and compare "
                        "every policy in one table (compare.json / .md / .png)")
    _add_run_args(p)
    p.add_argument("--policies", metavar="LIST",
                   help="comma-separated policies (default: all that apply; pixel: "
                        f"{','.join(PIXEL_POLICIES)}; MRI: {','.join(MRI_POLICIES)})")
    p.add_argument("--compare-config", metavar="FILE",
                   help="YAML with comparison settings (keys of CompareConfig: seeds, test_subset, loupe, dps, adps, "
                        "ads...); single values also via --set compare.KEY=VALUE")
    return p


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--set`` values: ``compare.X=Y`` go to the comparison, the rest to the experiment config."""
    exp, cmp_ = [], []
    for item in overrides or []:
        (cmp_ if item.strip().startswith("compare.") else exp).append(item.strip()[8:] if item.strip().startswith(
            "compare.") else item)
    return exp, cmp_


def run(args) -> int:
    """Entry point of ``flowcs compare`` (returns the exit code)."""
    from . import build_context

    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise FlowcsError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    exp_over, cmp_over = split_overrides(args.overrides)
    ctx = build_context(args.experiment, args.config, exp_over, args.smoke, args.run_dir, args.results, args.data,
                        args.seed, args.device, args.resume)
    cc = compare_config(args.experiment, args.smoke, args.compare_config, cmp_over)
    payload = compare(ctx, cc, args.policies)
    scale = 100.0 if payload["metric"] == "accuracy" else 1.0
    print(markdown_table(payload, scale) + f"written {ctx.results_dir / 'compare.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover - convenience: python -m flowcs.experiments.compare ...
    parser = argparse.ArgumentParser(prog="flowcs")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    ns = parser.parse_args(["compare", *sys.argv[1:]])
    try:
        sys.exit(run(ns))
    except FlowcsError as exc:
        print(f"flowcs: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
