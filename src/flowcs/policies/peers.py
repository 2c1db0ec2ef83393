"""The learned peers of the flow policy (LOUPE, DPS, A-DPS, ADS): their settings, how to build one, and
:class:`PerBudgetPolicy`, which puts one trained model per budget behind the one policy interface.

``flowcs compare`` trains them against an experiment's frozen task (``flowcs.experiments.compare``); the
settings here are the ``compare:`` section of every experiment's configuration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..operators.base import Operator
from ..training.loop import LoopConfig
from .adps import ADPSNet, ADPSPolicy
from .ads import ADSPolicy, ImagePriorNet
from .base import Policy
from .dps import RELAXATIONS, TEST_MODES, DPSPolicy
from .loupe import LOUPEPolicy

__all__ = ["PEERS", "LOUPEConfig", "DPSConfig", "ADPSConfig", "ADSConfig", "check_peer_configs", "make_peer",
           "make_ads", "PerBudgetPolicy", "peer_signature", "ads_signature", "trained_note"]

PEERS = ("loupe", "dps", "adps", "ads")


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


def check_peer_configs(loupe: LOUPEConfig, dps: DPSConfig, adps: ADPSConfig, ads: ADSConfig,
                       where: str = "compare") -> None:
    """One-line errors for peer settings that would fail only once training has started."""
    for name, c in (("loupe", loupe), ("dps", dps), ("adps", adps)):
        if c.test_mode not in TEST_MODES:
            raise ConfigError(f"{where}.{name}.test_mode {c.test_mode!r}: choose one of {', '.join(TEST_MODES)}")
    for name, c in (("dps", dps), ("adps", adps)):
        if c.relax not in RELAXATIONS:
            raise ConfigError(f"{where}.{name}.relax {c.relax!r}: choose one of {', '.join(RELAXATIONS)}")
        if c.tau <= 0:
            raise ConfigError(f"{where}.{name}.tau must be > 0, got {c.tau}")
    if adps.steps < 1:
        raise ConfigError(f"{where}.adps.steps must be >= 1, got {adps.steps}")
    if ads.samples < 2 or ads.steps < 1 or ads.per_round < 1 or ads.seeds < 1 or ads.max_batch < 1:
        raise ConfigError(f"{where}.ads: samples >= 2 and steps, per_round, seeds, max_batch >= 1 are required")


def make_peer(name: str, operator: Operator, cfg, seed: int):
    """An untrained LOUPE / DPS / A-DPS policy (an ``nn.Module`` with ``relaxed_mask`` for training)."""
    n = operator.n_locations
    if name == "loupe":
        return LOUPEPolicy(n, cfg.prob_slope, cfg.sample_slope, cfg.test_mode, seed)
    if name == "dps":
        return DPSPolicy(n, cfg.tau, cfg.relax, cfg.test_mode, seed)
    if name == "adps":
        net = ADPSNet(operator.image_shape[0], n, cfg.widths, cfg.hidden, cfg.pool)
        return ADPSPolicy(net, operator, cfg.steps, cfg.tau, cfg.relax, cfg.test_mode)
    raise ConfigError(f"unknown peer {name!r}; choose one of {', '.join(PEERS)}")


def make_ads(operator: Operator, cfg: ADSConfig, shift: float, scale: float) -> tuple[ImagePriorNet, ADSPolicy]:
    """ADS's (untrained) image prior and the policy that samples it."""
    net = ImagePriorNet(operator.image_shape[0], cfg.widths, cfg.time_dim, shift, scale)
    return net, ADSPolicy(net, operator, cfg.samples, cfg.steps, cfg.per_round, cfg.max_batch)


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


def _loop_key(loop: LoopConfig) -> dict:
    d = asdict(loop)
    return {k: d[k] for k in ("epochs", "batch_size", "lr", "steps_per_epoch")}


def peer_signature(experiment: str, name: str, operator: Operator, budget, cfg, first_locations: int, noisy: bool,
                   task_fingerprint: str) -> dict:
    """What a trained LOUPE / DPS / A-DPS depends on: its settings, the geometry, the budget and the frozen task."""
    shape = {k: v for k, v in asdict(cfg).items() if k not in ("loop", "test_mode")}
    shape["loop"] = _loop_key(cfg.loop)
    return {"experiment": experiment, "peer": name, "n_locations": operator.n_locations,
            "sampling": "operator" if name == "loupe" else "linear",
            "image_shape": list(operator.image_shape), "budget": budget, "first_locations": first_locations,
            "noisy": noisy, "task": task_fingerprint, **shape}


def ads_signature(experiment: str, operator: Operator, cfg: ADSConfig, shift: float, scale: float) -> dict:
    """What ADS's image prior depends on: never the task (the prior never sees it), so a new task model reuses it."""
    return {"experiment": experiment, "peer": "ads-prior", "image_shape": list(operator.image_shape),
            "widths": list(cfg.widths), "time_dim": cfg.time_dim, "shift": round(shift, 6), "scale": round(scale, 6),
            "loop": _loop_key(cfg.loop)}


def trained_note(name: str, per_budget: bool | None, n_budgets: int, rates: tuple[float, float], pixel: bool) -> str:
    """How a policy of the comparison was trained, for the tables."""
    lo, hi = rates
    if name == "flow":
        return (f"one model for every budget (trained over rates {lo:g}-{hi:g} % of the locations)"
                if pixel else "one model at the experiment's fixed budget")
    if name in ("loupe", "dps", "adps"):
        if per_budget:
            return f"one model per budget ({n_budgets} models, as in the paper)"
        return f"one model for every budget (rates {lo:g}-{hi:g} %, sampled per batch)"
    if name == "ads":
        return "one image prior (flow matching, task-agnostic) for every budget; no mask training"
    return "not trained"
