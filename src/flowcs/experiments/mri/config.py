"""Configuration of the MRI experiments: ``mri-4x`` (:class:`Config`) and ``mri-8x`` (:class:`Config8x`), their
``--smoke`` preset, and the line budget of an acceleration (the LF band counts inside it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...errors import ConfigError
from ...flow.objective import ObjectiveConfig, check_flow_settings
from ...operators.kspace import low_frequency_band
from ...training.loop import LoopConfig
from ..ablation import AblationConfig
from ..compare_config import SMOKE_MRI, CompareConfig

__all__ = ["DataConfig", "SamplingConfig", "AugmentConfig", "EncoderConfig", "MoDLConfig", "FlowConfig",
           "EvalConfig", "Config", "Config8x", "SMOKE", "line_budget", "validate"]


@dataclass
class DataConfig:
    source: str = "kellman"  # kellman | fastmri
    kellman_dir: str = "mri_complex_kellman_fatwater"  # relative to the data root (or absolute)
    val_files: list[str] = field(default_factory=lambda: ["PKdata4.mat", "PKdata12.mat"])  # 6 images
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
    # the condition magnitude is average-pooled by this factor before the encoder: it is band-limited to the LF
    # band, so 4x fewer pixels lose nothing (validation SSIM 0.9096 with and without at 4x) at 1/16 of the work
    pool: int = 4
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
class FlowConfig(ObjectiveConfig):  # rounds: acquisition rounds after the LF band
    acquired_input: bool = False  # the velocity MLP also reads the acquired-line mask (for rounds > 1)
    # added to the scores of the policy budget's most central lines (0: no prior). Chosen on the validation
    # files: 2.0 (the flow then keeps the central block: SSIM = the block's, 0.9101 at 4x / 0.8112 at 8x), against
    # 1.0 (0.9096 / 0.8092), 0.5 (0.9074 at 4x) and none (0.9025 at 4x); results/mri-*/README.md, "Choices"
    center_prior: float = 2.0
    # Euler steps at inference: 1 step x 4 samples gave the 20-step masks on 24/24 validation draws (flowcs bench
    # speed-quality table); 1 sample did not (2/24, -0.0135 SSIM)
    steps: int = 1
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


# MRI: every peer step runs the frozen MoDL (5 unrolls x 8 CG steps) forward and backward: ~8-16 s per batch of 2
# on the shared CPU, so the peers get tens of steps (recorded in compare.json)
def _compare_4x() -> CompareConfig:
    return CompareConfig.preset({
        "loupe": {"loop": {"batch_size": 2, "steps_per_epoch": 50, "log_every": 5}},
        "dps": {"loop": {"batch_size": 2, "steps_per_epoch": 50, "log_every": 5}},
        "adps": {"steps": 4, "loop": {"batch_size": 2, "lr": 3e-3, "steps_per_epoch": 60, "log_every": 5}},
        "ads": {"widths": [8, 16, 32], "per_round": 1, "test_images": None, "samples": 6, "steps": 6,
                "max_batch": 64, "loop": {"epochs": 9, "batch_size": 8, "log_every": 20}},  # 46 steps/epoch
    })


def _compare_8x() -> CompareConfig:
    return CompareConfig.preset({
        "loupe": {"loop": {"batch_size": 2, "steps_per_epoch": 40, "log_every": 5}},
        "dps": {"loop": {"batch_size": 2, "steps_per_epoch": 40, "log_every": 5}},
        "adps": {"steps": 3, "loop": {"batch_size": 2, "lr": 3e-3, "steps_per_epoch": 50, "log_every": 5}},
        "ads": {"widths": [8, 16, 32], "per_round": 1, "test_images": None, "samples": 6, "steps": 6,
                "max_batch": 32, "loop": {"epochs": 4, "batch_size": 4, "log_every": 20}},  # 92 steps/epoch
    })


def _ablation_default() -> AblationConfig:
    # every MRI flow step runs MoDL forward and backward: the variants get a third of the main flow's steps
    # rounds x targets x losses without the centre prior (what the flow learns by itself), then prior strengths
    return AblationConfig(gates=[], rates=[], rounds=[1, 4], targets=["saliency", "greedy", "self", "none"],
                          losses=["both", "task"], priors=[0.5, 1.0, 2.0],
                          loop=LoopConfig(epochs=1, batch_size=4, lr=1e-3, steps_per_epoch=60, log_every=10),
                          val_images=None)


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
    ablation: AblationConfig = field(default_factory=_ablation_default)
    compare: CompareConfig = field(default_factory=_compare_4x)


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
    compare: CompareConfig = field(default_factory=_compare_8x)


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
    "ablation": {"rounds": [1, 2], "targets": ["saliency"], "losses": ["both"], "priors": [1.0],
                 "loop": {"batch_size": 2, "steps_per_epoch": 2, "log_every": 1}},
    "compare": SMOKE_MRI,
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
    check_flow_settings(cfg.flow)
    if cfg.flow.samples < 1 or cfg.flow.steps < 1 or cfg.flow.pool_augment < 1:
        raise ConfigError("flow.samples, flow.steps and flow.pool_augment must be >= 1")
    if min(cfg.modl.unrolls, cfg.modl.pretrain_unrolls, cfg.modl.cg_iters) < 1:
        raise ConfigError("modl.unrolls, modl.pretrain_unrolls and modl.cg_iters must be >= 1")
    if not 0 <= cfg.modl.vd_fraction <= 1:
        raise ConfigError(f"modl.vd_fraction {cfg.modl.vd_fraction} must be in [0, 1]")
    if cfg.encoder.repeat < 1 or cfg.modl.repeat < 1:
        raise ConfigError("encoder.repeat and modl.repeat must be >= 1")
    cfg.compare.validate()
