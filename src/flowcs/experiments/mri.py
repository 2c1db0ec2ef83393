"""MRI acceleration with the low-frequency-first flow policy (paper §2.6.3, §3.3, Table 1, Fig. 5–6; SPEC §1–5).

Two experiments share this module:

* ``mri-4x``: 128 × 128 images, 4× acceleration (32 of 128 lines), low-frequency band 8 % (10 lines);
* ``mri-8x``: 208 × 208 images, 8× acceleration (26 of 208 lines), low-frequency band 4 % (8 lines).

The LF band counts **inside** the acceleration budget (as in fastMRI masks): a policy chooses
``round(W / acceleration) − |LF band|`` further columns.

Stages (each resumable; each writes ``<run_dir>/<stage>.pt``):
  encoder        small U-Net (LF magnitude → full magnitude, L1); its encoder is the flow's frozen condition encoder
  modl-pretrain  MoDL with 1 unroll on random LF + uniform / variable-density masks with k-space noise
  modl           the same MoDL fine-tuned with ``modl.unrolls`` unrolls (the frozen task model afterwards)
  flow           the MLP flow policy trained with the frozen MoDL (FM + task loss, Kendall weighting, gate)
``evaluate`` reconstructs every policy's measurement with the same frozen MoDL: zero-filled (random mask,
no network), random (LF + uniform), equispaced, variable-density, flow, low-frequency (the budget as the
lines nearest the centre: a wider LF band, the reference a centre-heavy learned policy has to beat), and
``full`` (all lines).

Data (``data.source``): ``kellman`` (default; the real complex images of ``../shared/data`` split by
file, plus the ESPIRiT brain slice as an extra test image) or ``fastmri`` (a folder of single-coil
``.h5`` volumes split by volume; tests use synthetic files in that layout).
"""

from __future__ import annotations

import math
import sys
import time
import types
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.mri_files import ImageSet, build_mri_splits, crop_or_pad, lf_scale, random_view
from ..errors import ConfigError
from ..flow.model import FlowModel, FrozenEncoder
from ..flow.nets.mlp import MRIVelocityMLP
from ..flow.objective import LOSS_MODES, FlowTaskObjective
from ..flow.policy import FlowPolicy
from ..flow.targets import TARGETS, TargetEstimator
from ..io import torch_load_safe, torch_save
from ..masks import random_mask
from ..metrics import nmse, psnr, ssim, summarize
from ..operators.fft import complex_abs, to_real
from ..operators.kspace import KSpaceLineOperator, low_frequency_band
from ..policies.base import Policy
from ..policies.cartesian import EquispacedPolicy, LowFrequencyPolicy, VariableDensityPolicy
from ..policies.random import RandomPolicy
from ..rng import rand_rows
from ..tasks.modl import MoDL, MRIReconstructionTask
from ..tasks.unet import ReconUNet
from ..training.loop import LoopConfig, fit
from .common import RunContext, load_stage, metrics_payload, record_data_sources, recorded_data_sources, write_results

STAGES = ("encoder", "modl-pretrain", "modl", "flow")
POLICY_ORDER = ("zero-filled", "random", "equispaced", "variable-density", "flow", "low-frequency", "full")


# ----------------------------------------------------------------------------- configuration


@dataclass
class DataConfig:
    source: str = "kellman"  # kellman | fastmri
    kellman_dir: str = "mri_complex_kellman_fatwater"  # relative to the data root (or absolute)
    val_files: list[str] = field(default_factory=lambda: ["PKdata4.mat"])
    test_files: list[str] = field(
        default_factory=lambda: ["PKdata3.mat", "PKdata8.mat", "PKdata13.mat", "PKdataset16.mat"])
    brain_test: str | None = "mri_kspace_espirit_brain8ch/brain_alias_8ch.mat"  # extra real test slice
    fastmri_dir: str | None = None  # folder of single-coil .h5 volumes (source: fastmri)
    val_fraction: float = 0.2  # fastmri: share of volumes for validation
    test_fraction: float = 0.2  # fastmri: share of volumes for testing
    split_seed: int = 0
    half_slices: int = 10  # fastmri: centre ± this many slices


@dataclass
class SamplingConfig:
    size: int = 128  # images are size × size; N = size k-space columns
    acceleration: float = 4.0  # total lines = round(size / acceleration), LF band included
    lf_fraction: float = 0.08  # central low-frequency band acquired first
    noise_pct: float = 1.0  # k-space noise std, % of each (real/imag) channel's std


@dataclass
class AugmentConfig:
    flips: bool = True
    transpose: bool = True
    max_shift: int = 16  # random shift of the crop window (pixels per axis)
    random_phase: bool = True


@dataclass
class EncoderConfig:
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    bottleneck: int = 64
    repeat: int = 8  # one epoch = repeat × (training images), each with fresh augmentation
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=3, batch_size=8, lr=1e-3, log_every=10))


@dataclass
class MoDLConfig:
    channels: int = 32
    blocks: int = 4
    cg_iters: int = 8
    lam_init: float = 0.05
    ssim_weight: float = 1.0
    pretrain_unrolls: int = 1
    unrolls: int = 5  # paper: 10 (halved to fit the CPU budget; configurable)
    vd_fraction: float = 0.5  # share of training masks drawn variable-density (the rest LF + uniform, as in the paper)
    vd_power: float = 3.0
    repeat: int = 8
    pretrain: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=4, batch_size=4, lr=1e-3, log_every=10))
    finetune: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=1, batch_size=4, lr=5e-4, log_every=10))


@dataclass
class FlowConfig:
    target: str = "saliency"
    best_of_r: int = 16
    loss: str = "both"
    gate_a: float = 30.0
    gate_b: float = 1.0
    steps: int = 20  # Euler steps at inference
    samples: int = 4  # flow samples per condition, scores averaged before top-k
    hidden: int = 512
    layers: int = 4
    time_dim: int = 64
    pool_augment: int = 4  # training pool = pool_augment augmented views of every training image
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=6, batch_size=4, lr=1e-3, log_every=10))


@dataclass
class EvalConfig:
    split: str = "test"  # test | val
    seeds: int = 4  # noise / random-mask / flow-sample draws per image
    batch_size: int = 16
    vd_power: float = 3.0  # variable-density baseline: density ∝ (1 − |c − W/2|/(W/2))^power
    figure_image: int = 0  # test image shown in reconstructions.png


@dataclass
class Config:
    threads: int | None = None  # torch intra-op threads (None: torch default)
    data: DataConfig = field(default_factory=DataConfig)
    mri: SamplingConfig = field(default_factory=SamplingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    modl: MoDLConfig = field(default_factory=MoDLConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class Config8x(Config):
    """mri-8x: 208 × 208 images are ~2.6× the work of 128 × 128, so the cheap stages get fewer epochs."""

    mri: SamplingConfig = field(default_factory=lambda: SamplingConfig(size=208, acceleration=8.0, lf_fraction=0.04))
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        loop=LoopConfig(epochs=2, batch_size=8, lr=1e-3, log_every=10)))
    modl: MoDLConfig = field(default_factory=lambda: MoDLConfig(
        pretrain=LoopConfig(epochs=3, batch_size=4, lr=1e-3, log_every=10)))
    flow: FlowConfig = field(default_factory=lambda: FlowConfig(
        loop=LoopConfig(epochs=3, batch_size=4, lr=1e-3, log_every=10)))


SMOKE = {
    "threads": 1,
    "encoder": {"widths": [8, 16, 16], "bottleneck": 16, "repeat": 2,
                "loop": {"epochs": 1, "batch_size": 4, "steps_per_epoch": 4}},
    "modl": {"unrolls": 2, "repeat": 2,
             "pretrain": {"epochs": 1, "batch_size": 2, "steps_per_epoch": 4},
             "finetune": {"epochs": 1, "batch_size": 2, "steps_per_epoch": 3}},
    "flow": {"steps": 4, "samples": 2, "hidden": 64, "pool_augment": 1,
             "loop": {"epochs": 1, "batch_size": 2, "steps_per_epoch": 4}},
    "eval": {"seeds": 1, "batch_size": 8},
}


# ----------------------------------------------------------------------------- budgets & validation


def line_budget(size: int, acceleration: float, lf_fraction: float, where: str = "") -> tuple[int, int, int]:
    """(total lines, LF lines, policy lines) for an acceleration; the LF band counts inside the total.

    A budget that cannot hold the LF band is a :class:`ConfigError` (``where`` prefixes the message,
    e.g. the file being processed).
    """
    if not (isinstance(acceleration, (int, float)) and math.isfinite(acceleration) and acceleration >= 1):
        raise ConfigError(f"{where}acceleration {acceleration!r} must be a number >= 1")
    if not 0 < lf_fraction <= 1:
        raise ConfigError(f"{where}low-frequency fraction {lf_fraction!r} must be in (0, 1]")
    total = int(math.floor(size / acceleration + 0.5))
    n_lf = int(low_frequency_band(size, lf_fraction).sum())
    if total < n_lf:
        raise ConfigError(
            f"{where}acceleration {acceleration:g}x leaves {total} of {size} lines, fewer than the {n_lf}-line "
            f"low-frequency band ({100 * lf_fraction:g}% of {size}); lower the acceleration or the LF fraction")
    return total, n_lf, total - n_lf


def validate(cfg: Config) -> None:
    d, m = cfg.data, cfg.mri
    if d.source not in ("kellman", "fastmri"):
        raise ConfigError(f"data.source {d.source!r} must be 'kellman' or 'fastmri'")
    if d.source == "fastmri" and not d.fastmri_dir:
        raise ConfigError("data.source 'fastmri' needs data.fastmri_dir (a folder of single-coil .h5 files)")
    if not isinstance(m.size, int) or m.size < 16:
        raise ConfigError(f"mri.size {m.size!r} must be an integer >= 16")
    if m.noise_pct < 0:
        raise ConfigError(f"mri.noise_pct {m.noise_pct} must be >= 0")
    line_budget(m.size, m.acceleration, m.lf_fraction, "mri: ")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"threads {cfg.threads} must be >= 1")
    if cfg.eval.split not in ("test", "val"):
        raise ConfigError(f"eval.split {cfg.eval.split!r} must be 'test' or 'val'")
    if cfg.eval.seeds < 1:
        raise ConfigError("eval.seeds must be at least 1")
    if cfg.flow.target not in TARGETS:
        raise ConfigError(f"flow.target {cfg.flow.target!r}: choose one of {', '.join(TARGETS)}")
    if cfg.flow.loss not in LOSS_MODES:
        raise ConfigError(f"flow.loss {cfg.flow.loss!r}: choose one of {', '.join(LOSS_MODES)}")
    if cfg.flow.samples < 1 or cfg.flow.steps < 1 or cfg.flow.pool_augment < 1:
        raise ConfigError("flow.samples, flow.steps and flow.pool_augment must be >= 1")
    if min(cfg.modl.unrolls, cfg.modl.pretrain_unrolls, cfg.modl.cg_iters) < 1:
        raise ConfigError("modl.unrolls, modl.pretrain_unrolls and modl.cg_iters must be >= 1")
    if not 0 <= cfg.modl.vd_fraction <= 1:
        raise ConfigError(f"modl.vd_fraction {cfg.modl.vd_fraction} must be in [0, 1]")
    if cfg.encoder.repeat < 1 or cfg.modl.repeat < 1:
        raise ConfigError("encoder.repeat and modl.repeat must be >= 1")


# ----------------------------------------------------------------------------- shared pieces


@dataclass
class Setup:
    """What every stage derives from the sampling config."""

    size: int
    operator: KSpaceLineOperator
    lf: torch.Tensor  # bool (N,)
    total: int
    n_lf: int
    k: int  # policy lines

    @classmethod
    def from_cfg(cls, cfg: Config) -> Setup:
        m = cfg.mri
        total, n_lf, k = line_budget(m.size, m.acceleration, m.lf_fraction, "mri: ")
        return cls(m.size, KSpaceLineOperator(m.size, m.size, m.noise_pct),
                   low_frequency_band(m.size, m.lf_fraction), total, n_lf, k)

    def acquired(self, batch: int, device=None) -> torch.Tensor:
        return self.lf.to(device).expand(batch, -1).clone()


def normalise(views: torch.Tensor, lf_fraction: float) -> torch.Tensor:
    """Complex (B, S, S) → real (B, 2, S, S) divided by each image's LF-band scale (see data.mri_files)."""
    return to_real(views / lf_scale(views, lf_fraction)[:, None, None])


def prepare(images: ImageSet, idx, cfg: Config, generator: torch.Generator | None = None) -> torch.Tensor:
    """Normalised (B, 2, S, S) batch: augmented views with ``generator``, centre crop/pad without."""
    a, s = cfg.augment, cfg.mri.size
    views = []
    for i in idx:
        img = images.image(int(i))
        if generator is None:
            views.append(crop_or_pad(img, s))
        else:
            views.append(random_view(img, s, generator, flips=a.flips, transpose=a.transpose,
                                     max_shift=a.max_shift, random_phase=a.random_phase))
    return normalise(torch.stack(views), cfg.mri.lf_fraction)


def lf_condition(op: KSpaceLineOperator, x: torch.Tensor, lf: torch.Tensor, noisy: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 1, S, S) magnitude of the zero-filled LF-band reconstruction: the flow's condition."""
    return complex_abs(op.zero_filled(op.measure(x, lf, noisy=noisy, generator=generator), lf))


def _threads(cfg: Config) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def make_encoder_net(cfg: Config) -> ReconUNet:
    return ReconUNet(1, 1, cfg.encoder.widths, cfg.encoder.bottleneck)


def make_modl(cfg: Config, unrolls: int) -> MoDL:
    m = cfg.modl
    return MoDL(unrolls, m.cg_iters, m.channels, m.blocks, m.lam_init)


def build_flow_model(cfg: Config, encoder: ReconUNet) -> FlowModel:
    f = cfg.flow
    velocity = MRIVelocityMLP(cfg.mri.size, sum(encoder.feature_channels), f.hidden, f.layers, f.time_dim)
    return FlowModel(FrozenEncoder(encoder, "encode"), velocity)


def _signature(ctx: RunContext, stage: str) -> dict:
    c = ctx.cfg
    base = {"experiment": ctx.experiment, "size": c.mri.size}
    if stage == "encoder":
        return {**base, "widths": list(c.encoder.widths), "bottleneck": c.encoder.bottleneck}
    if stage in ("modl-pretrain", "modl"):
        unrolls = c.modl.pretrain_unrolls if stage == "modl-pretrain" else c.modl.unrolls
        return {**base, "channels": c.modl.channels, "blocks": c.modl.blocks, "unrolls": unrolls,
                "acceleration": c.mri.acceleration, "lf_fraction": c.mri.lf_fraction}
    return {**base, "acceleration": c.mri.acceleration, "lf_fraction": c.mri.lf_fraction, "hidden": c.flow.hidden,
            "layers": c.flow.layers, "time_dim": c.flow.time_dim, "encoder_widths": list(c.encoder.widths),
            "encoder_bottleneck": c.encoder.bottleneck}


def _load_stage(ctx: RunContext, stage: str, module: nn.Module, prefix: str = "model.") -> nn.Module:
    return load_stage(ctx, stage, module, _signature(ctx, stage), prefix)


def trained_encoder(ctx: RunContext) -> ReconUNet:
    return _load_stage(ctx, "encoder", make_encoder_net(ctx.cfg))


def trained_modl(ctx: RunContext) -> MRIReconstructionTask:
    net = _load_stage(ctx, "modl", make_modl(ctx.cfg, ctx.cfg.modl.unrolls))
    return MRIReconstructionTask(net, ctx.cfg.modl.ssim_weight).freeze()


def trained_flow(ctx: RunContext) -> FlowPolicy:
    model = build_flow_model(ctx.cfg, trained_encoder(ctx))
    _load_stage(ctx, "flow", model)
    return FlowPolicy(model, ctx.cfg.mri.size, steps=ctx.cfg.flow.steps, samples=ctx.cfg.flow.samples)


def load_splits(ctx: RunContext, splits=("train", "val", "test")) -> dict[str, ImageSet]:
    d = ctx.cfg.data
    return build_mri_splits(d.source, ctx.data_root, ctx.cfg.mri.size, kellman_dir=d.kellman_dir,
                            val_files=d.val_files, test_files=d.test_files, brain=d.brain_test,
                            fastmri_dir=d.fastmri_dir, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                            split_seed=d.split_seed, half_width=d.half_slices, splits=splits)


# ----------------------------------------------------------------------------- objectives


class EncoderObjective(nn.Module):
    """Condition encoder pretraining: noisy LF-band magnitude → full magnitude (L1)."""

    def __init__(self, net: ReconUNet, setup: Setup):
        super().__init__()
        self.model, self.setup = net, setup

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        s = self.setup
        cond = lf_condition(s.operator, x, s.acquired(x.shape[0], x.device), True, generator)
        loss = (self.model(cond) - complex_abs(x)).abs().mean()
        return {"loss": loss}


class MoDLObjective(nn.Module):
    """MoDL on random masks at the experiment's budget: LF band + k lines, uniform or variable-density."""

    def __init__(self, task: MRIReconstructionTask, setup: Setup, vd_fraction: float, vd_power: float):
        super().__init__()
        self.model, self.task, self.setup = task.model, task, setup
        self.vd_fraction = vd_fraction
        self.vd = VariableDensityPolicy(setup.size, vd_power)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        s, b = self.setup, x.shape[0]
        acq = s.acquired(b, x.device)
        uni = random_mask(b, s.size, s.k, acq, generator, x.device)
        vd = self.vd.propose(x, s.k, acq, generator)
        use_vd = (rand_rows(b, generator=generator) < self.vd_fraction).to(x.device)[:, None]
        mask = acq | torch.where(use_vd, vd, uni)
        op = s.operator
        y = op.measure(x, mask, noisy=True, generator=generator)
        pred = self.task.predict(op.zero_filled(y, mask), op.mask_to_image(mask))
        loss = self.task.loss(pred, x)
        with torch.no_grad():
            score = self.task.score(pred.detach(), x).mean()
        return {"loss": loss, "ssim": score, "lam": self.model.lam.detach()}


class PooledTarget(TargetEstimator):
    """Target masks precomputed once for the fixed flow-training pool (the MoDL is frozen and the MRI budget
    fixed, so an example's saliency / best-of-R target never changes). The batch function hands the rows of the
    current batch over with :meth:`select`; ``none`` still draws fresh random masks."""

    def __init__(self, kind: str, task, operator, masks: torch.Tensor, r: int = 16):
        super().__init__(kind, task, operator, r)
        self.masks = masks
        self._current: torch.Tensor | None = None

    def select(self, idx: torch.Tensor) -> None:
        self._current = self.masks[idx]

    def __call__(self, x, y, k, acquired, generator):
        if self.kind == "none":
            return super().__call__(x, y, k, acquired, generator)
        if self._current is None or self._current.shape[0] != x.shape[0]:
            raise RuntimeError("PooledTarget.select() was not called for this batch")
        return acquired | self._current.to(x.device)


# ----------------------------------------------------------------------------- training


def train(ctx: RunContext, stages: list[str] | None = None) -> None:
    _threads(ctx.cfg)
    stages = stages or list(STAGES)
    splits = load_splits(ctx, ("train", "val", "test"))
    train_set = splits["train"]
    record_data_sources(ctx, _describe_data(ctx, splits))
    setup = Setup.from_cfg(ctx.cfg)
    for stage in STAGES:
        if stage not in stages:
            continue
        torch.manual_seed(ctx.seed)
        if stage == "encoder":
            obj = EncoderObjective(make_encoder_net(ctx.cfg), setup).to(ctx.device)
            _fit_images(ctx, stage, obj, ctx.cfg.encoder.loop, train_set, ctx.cfg.encoder.repeat)
        elif stage in ("modl-pretrain", "modl"):
            m = ctx.cfg.modl
            net = make_modl(ctx.cfg, m.pretrain_unrolls if stage == "modl-pretrain" else m.unrolls)
            if stage == "modl":  # fine-tuning starts from the pretrained weights (a resume overrides them)
                _load_stage(ctx, "modl-pretrain", net)
            obj = MoDLObjective(MRIReconstructionTask(net, m.ssim_weight), setup, m.vd_fraction, m.vd_power)
            _fit_images(ctx, stage, obj.to(ctx.device), m.pretrain if stage == "modl-pretrain" else m.finetune,
                        train_set, m.repeat)
        elif stage == "flow":
            train_flow(ctx, setup, train_set)


def _fit_images(ctx: RunContext, stage: str, obj: nn.Module, loop: LoopConfig, images: ImageSet,
                repeat: int) -> None:
    n = len(images)

    def batch_fn(idx, gen):
        return {"x": prepare(images, idx % n, ctx.cfg, gen).to(ctx.device)}

    fit(obj, batch_fn, n * repeat, loop, out_dir=ctx.run_dir, name=stage, signature=_signature(ctx, stage),
        seed=ctx.seed, device=ctx.device, dist=ctx.dist, resume=ctx.resume, desc=f"{ctx.experiment} {stage}")


def _fingerprint(module: nn.Module) -> float:
    return round(float(sum(p.detach().double().sum() for p in module.state_dict().values()
                           if torch.is_tensor(p) and p.is_floating_point())), 6)


def flow_pool(ctx: RunContext, setup: Setup, images: ImageSet, task: MRIReconstructionTask) -> dict:
    """The fixed flow-training pool: augmented views, their noisy LF conditions and target masks (cached)."""
    f = ctx.cfg.flow
    n = len(images) * f.pool_augment
    sig = {"experiment": ctx.experiment, "size": setup.size, "k": setup.k, "n_lf": setup.n_lf, "items": n,
           "target": f.target, "best_of_r": f.best_of_r, "seed": ctx.seed, "modl": _fingerprint(task.model),
           "augment": dict(vars(ctx.cfg.augment)), "noise_pct": ctx.cfg.mri.noise_pct}
    path = ctx.run_dir / "flow-pool.pt"
    if path.is_file():
        cached = torch_load_safe(path)
        if cached.get("signature") == sig:
            return cached
    op, gen = setup.operator, torch.Generator().manual_seed(ctx.seed * 7_919 + 17)
    xs = torch.cat([prepare(images, range(len(images)), ctx.cfg, gen) for _ in range(f.pool_augment)])
    conds, masks = [], []
    estimator = TargetEstimator(f.target, task, op, f.best_of_r)
    chunk = max(1, ctx.cfg.flow.loop.batch_size)
    for start in tqdm(range(0, n, chunk), desc=f"{ctx.experiment} flow targets", leave=False):
        x = xs[start:start + chunk].to(ctx.device)
        acq = setup.acquired(x.shape[0], x.device)
        conds.append(lf_condition(op, x, acq, True, gen).cpu())
        masks.append((estimator(x, x, setup.k, acq, gen) & ~acq).cpu())
    pool = {"signature": sig, "x": xs, "condition": torch.cat(conds), "targets": torch.cat(masks)}
    if ctx.dist.is_main:
        torch_save(path, pool)
    return pool


def train_flow(ctx: RunContext, setup: Setup, images: ImageSet) -> None:
    f = ctx.cfg.flow
    task = trained_modl(ctx)
    pool = flow_pool(ctx, setup, images, task)
    model = build_flow_model(ctx.cfg, trained_encoder(ctx))
    target = PooledTarget(f.target, task, setup.operator, pool["targets"], f.best_of_r)
    obj = FlowTaskObjective(model, task, setup.operator, target, f.loss, f.gate_a, f.gate_b).to(ctx.device)

    def batch_fn(idx, _gen):
        target.select(idx)
        x = pool["x"][idx].to(ctx.device)
        return {"x": x, "y": x, "condition": pool["condition"][idx].to(ctx.device),
                "acquired": setup.acquired(len(idx), ctx.device), "k": setup.k}

    fit(obj, batch_fn, pool["x"].shape[0], f.loop, out_dir=ctx.run_dir, name="flow",
        signature=_signature(ctx, "flow"), seed=ctx.seed, device=ctx.device, dist=ctx.dist, resume=ctx.resume,
        desc=f"{ctx.experiment} flow")


# ----------------------------------------------------------------------------- evaluation


def _describe_data(ctx: RunContext, splits: dict[str, ImageSet]) -> dict:
    d = ctx.cfg.data
    out = {"source": d.source, "size": ctx.cfg.mri.size}
    if d.source == "kellman":
        out["root"] = str(ctx.data_root / d.kellman_dir)
        out["note"] = ("real complex MR images (ISMRM 2012 fat-water challenge, Kellman; coil-combined), "
                       "k-space = centred orthonormal FFT of each echo; split by file, never by echo")
        if d.brain_test:
            out["brain_test"] = str(ctx.data_root / d.brain_test) + " (8-coil k-space, SVD-compressed to 1 coil)"
    else:
        out["root"] = str(d.fastmri_dir)
        out["note"] = f"fastMRI single-coil .h5 volumes, split by volume, centre ±{d.half_slices} slices"
    for name, s in splits.items():
        out[name] = s.describe()
    return out


@torch.inference_mode()
def reconstruct(task: MRIReconstructionTask, op: KSpaceLineOperator, zf: torch.Tensor, mask: torch.Tensor,
                batch_size: int) -> torch.Tensor:
    outs = []
    for i in range(0, zf.shape[0], batch_size):
        m = mask[i:i + batch_size]
        outs.append(task.predict(zf[i:i + batch_size], op.mask_to_image(m)))
    return torch.cat(outs)


def _metrics(pred: torch.Tensor, target_mag: torch.Tensor, vol_range: torch.Tensor) -> dict[str, torch.Tensor]:
    p = complex_abs(pred)[:, 0].double()
    t = target_mag.double()
    return {"ssim": ssim(p, t), "psnr": psnr(p, t), "nmse": nmse(p, t),
            "ssim_vol": ssim(p, t, vol_range), "psnr_vol": psnr(p, t, vol_range)}


def _seed(*parts: int) -> torch.Generator:
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p)) % (2**61 - 1)
    return torch.Generator().manual_seed(h)


def evaluate(ctx: RunContext) -> dict:
    _threads(ctx.cfg)
    c, setup = ctx.cfg, Setup.from_cfg(ctx.cfg)
    split = c.eval.split
    images = load_splits(ctx, (split,))[split]
    if len(images) == 0:
        raise ConfigError(f"the {split} split is empty")
    task, flow = trained_modl(ctx), trained_flow(ctx)
    op, n_cols = setup.operator, setup.size
    x_all = prepare(images, range(len(images)), c)
    mag_all = complex_abs(x_all)[:, 0]
    vols = images.volumes
    vol_max = {v: max(float(mag_all[i].max()) for i in range(len(vols)) if vols[i] == v) for v in set(vols)}
    vol_range = torch.tensor([vol_max[v] for v in vols], dtype=torch.float64)
    policies: dict[str, Policy] = {
        "random": RandomPolicy(n_cols), "equispaced": EquispacedPolicy(n_cols),
        "variable-density": VariableDensityPolicy(n_cols, c.eval.vd_power), "flow": flow,
        "low-frequency": LowFrequencyPolicy(n_cols)}  # appended last: the other rows keep their mask seeds
    names = list(POLICY_ORDER)
    per_seed: dict[str, dict[str, list[torch.Tensor]]] = {p: {} for p in names}
    density = {p: torch.zeros(n_cols) for p in policies}
    flow_masks = torch.zeros(len(images), n_cols, dtype=torch.bool)
    fig: dict = {}
    flow_time, flow_count = 0.0, 0
    bs = c.eval.batch_size
    for s in range(c.eval.seeds):
        rows: dict[str, dict[str, list[torch.Tensor]]] = {p: {} for p in names}
        for start in tqdm(range(0, len(images), bs), desc=f"{ctx.experiment} evaluate seed {s}", leave=False):
            x = x_all[start:start + bs].to(ctx.device)
            tgt, vr = mag_all[start:start + bs], vol_range[start:start + bs]
            acq = setup.acquired(x.shape[0], x.device)
            noise_seed = (ctx.seed, 1, s, start)  # the same k-space noise for every policy (paired comparison)
            cond = lf_condition(op, x, acq, True, _seed(*noise_seed))
            masks: dict[str, torch.Tensor] = {}
            for p_i, (name, pol) in enumerate(policies.items()):
                t0 = time.perf_counter()
                masks[name] = pol.propose(cond, setup.k, acq, _seed(ctx.seed, 2, s, start, p_i))
                if name == "flow":
                    flow_time += time.perf_counter() - t0
                    flow_count += x.shape[0]
            masks["full"] = torch.ones_like(acq)
            for name, mask in masks.items():
                y = op.measure(x, mask, noisy=True, generator=_seed(*noise_seed))
                zf = op.zero_filled(y, mask)
                pred = reconstruct(task, op, zf, mask, bs).cpu()
                for key, val in _metrics(pred, tgt, vr).items():
                    rows[name].setdefault(key, []).append(val)
                if name == "random":
                    for key, val in _metrics(zf.cpu(), tgt, vr).items():
                        rows["zero-filled"].setdefault(key, []).append(val)
                if name in density:
                    density[name] += (mask & ~acq).float().sum(0).cpu()
                if name == "flow" and s == 0:
                    flow_masks[start:start + x.shape[0]] = mask.cpu()
                fi = c.eval.figure_image - start
                if s == 0 and 0 <= fi < x.shape[0]:
                    fig[name] = {"mask": mask[fi].cpu(), "zf": complex_abs(zf[fi:fi + 1])[0, 0].cpu(),
                                 "pred": complex_abs(pred[fi:fi + 1])[0, 0], "target": tgt[fi]}
        for name in names:
            for key, vals in rows[name].items():
                per_seed[name].setdefault(key, []).append(torch.cat(vals))
    # per image: mean over seeds; then mean ± std over images (and over volumes)
    per_image = {p: {k: torch.stack(v).mean(0) for k, v in per_seed[p].items()} for p in names}
    n_img = len(images)
    vol_names = sorted(set(vols), key=vols.index)

    def per_volume(values: torch.Tensor) -> torch.Tensor:
        return torch.stack([values[[i for i in range(n_img) if vols[i] == v]].mean() for v in vol_names])

    def row(values: torch.Tensor) -> dict:
        sm = summarize(values)
        return {"mean": [sm["mean"]], "std": [sm["std"]], "n": sm["n"], "ci95": [list(sm["ci95"])]}

    policies_rows = {p: row(per_image[p]["ssim"]) for p in names}
    extra = {m: {p: row(per_image[p][m]) for p in names} for m in ("psnr", "nmse")}
    vol_rows = {m: {p: row(per_volume(per_image[p][m + "_vol" if m != "nmse" else m])) for p in names}
                for m in ("ssim", "psnr", "nmse")}
    m = c.mri
    flow_ms = 1000 * flow_time / max(flow_count, 1)
    payload = metrics_payload(
        ctx.experiment, "ssim", True, "acceleration", [m.acceleration], policies_rows,
        extra_metrics=extra,
        per_volume={"n_volumes": len(vol_names), "volumes": vol_names, **vol_rows},
        lines={"columns": n_cols, "total": setup.total, "low_frequency": setup.n_lf, "policy": setup.k,
               "lf_fraction": m.lf_fraction, "lf_counts_inside_budget": True},
        image_size=[m.size, m.size], noise_pct=m.noise_pct, seeds=c.eval.seeds, split=split,
        data=_data_note(ctx), flow_policy_ms_per_slice=round(flow_ms, 2),
        per_image={"names": images.names, "volumes": vols,
                   **{p: {k: [round(float(v), 5) for v in per_image[p][k]] for k in ("ssim", "psnr", "nmse")}
                      for p in names}},
        notes=("Per-slice rows: SSIM/PSNR of magnitudes with the slice's own max as data range (fastMRI "
               "convention), mean ± std over images; each image's value is averaged over `seeds` draws of the "
               "k-space noise, random/equispaced/variable-density masks and flow samples. per_volume: data range "
               "= volume max, averaged per volume. Every policy's measurement is reconstructed by the same frozen "
               "MoDL; zero-filled = the random (LF + uniform) mask without MoDL; low-frequency = the lines nearest the "
               "k-space centre (a wider LF band; a reference, not a fastMRI mask); full = all lines through MoDL. "
               "The LF band is acquired first and counts inside the budget."),
    )
    if ctx.dist.is_main:
        write_results(ctx.results_dir, "metrics", payload,
                      ctx.metadata(data_source=_data_note(ctx), cpu_time_s=round(time.process_time(), 1)))
        _figures(ctx, setup, payload, fig, density, flow_masks, images, c.eval.seeds * n_img)
    return payload


def _data_note(ctx: RunContext) -> dict:
    return {"source": ctx.cfg.data.source, **recorded_data_sources(ctx)}


def _figures(ctx, setup: Setup, payload: dict, fig: dict, density: dict, flow_masks: torch.Tensor,
             images: ImageSet, n_draws: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import _save

    out = ctx.results_dir
    acc = ctx.cfg.mri.acceleration
    # Fig. 5: ground truth, mask, zero-filled, MoDL reconstruction, error map for every policy
    shown = [p for p in ("random", "equispaced", "variable-density", "flow") if p in fig]
    if shown:
        f, axes = plt.subplots(len(shown), 5, figsize=(11, 2.3 * len(shown)), squeeze=False)
        for r, name in enumerate(shown):
            d = fig[name]
            vmax = float(d["target"].max())
            s_val = float(ssim(d["pred"][None].double(), d["target"][None].double())[0])
            mask_img = d["mask"].float()[None, :].expand(setup.size, -1).clone()
            mask_img[:, setup.lf] = 0.5
            panels = [(d["target"], "ground truth", "gray", vmax), (mask_img, f"{name} mask", "gray", 1.0),
                      (d["zf"], "zero-filled", "gray", vmax), (d["pred"], f"MoDL  SSIM {s_val:.3f}", "gray", vmax),
                      ((d["pred"] - d["target"]).abs() * 5, "|error| × 5", "inferno", vmax)]
            for ax, (img, title, cmap, vm) in zip(axes[r], panels):
                ax.imshow(img.numpy(), cmap=cmap, vmin=0, vmax=vm)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
        f.suptitle(f"{ctx.experiment}: {images.names[ctx.cfg.eval.figure_image]} "
                   f"({acc:g}x, LF band grey in the mask)", fontsize=9)
        _save(f, out / "reconstructions.png")
    # Fig. 6b: average sampling density per column (policy lines only), flow vs the baselines
    f, ax = plt.subplots(figsize=(7, 3))
    cols = torch.arange(setup.size) - setup.size // 2
    for name, style in (("random", ":"), ("equispaced", "--"), ("variable-density", "-."), ("flow", "-"),
                        ("low-frequency", ":")):
        if name in density:
            ax.plot(cols.numpy(), (density[name] / n_draws).numpy(), style, label=name,
                    lw=2 if name == "flow" else 1, color="0.4" if name == "low-frequency" else None)
    lf_cols = cols[setup.lf]
    ax.axvspan(float(lf_cols.min()) - 0.5, float(lf_cols.max()) + 0.5, color="grey", alpha=0.3, label="LF band")
    ax.set_xlabel("k-space column (0 = DC)")
    ax.set_ylabel("P(column sampled)")
    ax.set_title(f"{ctx.experiment}: sampling density of the policy lines ({n_draws} masks per policy)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(f, out / "density.png")
    # the flow's mask for every test image (adaptivity at a glance)
    f, ax = plt.subplots(figsize=(7, 0.25 * len(images) + 1))
    ax.imshow(flow_masks.float().numpy(), cmap="gray_r", aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(images)))
    ax.set_yticklabels(images.names, fontsize=6)
    ax.set_xlabel("k-space column")
    ax.set_title(f"{ctx.experiment}: flow masks (seed 0), one row per image", fontsize=9)
    _save(f, out / "flow_masks.png")
    # SSIM per policy
    f, ax = plt.subplots(figsize=(6, 3))
    names = list(payload["policies"])
    means = [payload["policies"][p]["mean"][0] for p in names]
    stds = [payload["policies"][p]["std"][0] for p in names]
    ax.bar(names, means, yerr=stds, capsize=3, color=["C7" if p in ("zero-filled", "full") else "C0" for p in names])
    ax.set_ylabel("SSIM")
    ax.set_ylim(max(0.0, min(means) - 0.1), 1.0)
    ax.set_title(f"{ctx.experiment} ({payload['split']} images, mean ± std over images)", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    _save(f, out / "ssim.png")


# ----------------------------------------------------------------------------- the two registered experiments


def _experiment(name: str, config_cls: type, doc: str) -> types.ModuleType:
    """A module object per experiment name (registered in ``sys.modules`` like ``os.path``), so the registry can
    point ``mri-4x`` and ``mri-8x`` at different defaults while the code lives here."""
    mod = types.ModuleType(f"{__name__}.{name.replace('-', '_')}", doc)
    mod.NAME = name
    mod.Config = config_cls
    mod.SMOKE = SMOKE
    mod.STAGES = STAGES
    mod.validate = validate
    mod.train = train
    mod.evaluate = evaluate
    mod.__file__ = __file__
    sys.modules[mod.__name__] = mod
    return mod


mri_4x = _experiment("mri-4x", Config, "MRI 4x: 128x128, LF band 8% (see flowcs.experiments.mri)")
mri_8x = _experiment("mri-8x", Config8x, "MRI 8x: 208x208, LF band 4% (see flowcs.experiments.mri)")

__all__ = ["Config", "Config8x", "SMOKE", "STAGES", "validate", "train", "evaluate", "line_budget", "Setup",
           "prepare", "normalise", "lf_condition", "trained_modl", "trained_flow", "trained_encoder", "mri_4x",
           "mri_8x"]
