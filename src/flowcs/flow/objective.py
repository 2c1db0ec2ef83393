"""Training objective of the flow policy: FM regression + task loss through the sigmoid gate.

One forward pass (paper Alg. 1, SPEC §2–3):
  x1 = 2·m* − 1 from the target estimator, x_t on the linear path, v = v_θ(x_t, t, c),
  L_FM = ‖v − (x1 − x0)‖², x̂1 = x_t + (1 − t)·v,
  m_soft = gate(x̂1; k, κ(t)), L_task = task loss on the soft-masked measurement,
  L = Kendall(L_FM, L_task) (or one of the two for the ablations).

Sequential acquisition (``rounds = R > 1``): the budget k is split into R rounds
(:func:`flowcs.masks.split_budget`). Each batch trains one round r, drawn uniformly: rounds 0…r−1 are first
*rolled out* with the current flow (``rollout_steps`` Euler steps, hard top-k, no gradient), the samples are
measured with what those rounds acquired, the condition is rebuilt, and the pass above runs for round r's
locations on top of them. The gradient stops at the roll-out: earlier rounds' choices are hard top-k selections
of the current model, i.e. the states the policy will really be in; back-propagating through them would need a
relaxation of every earlier round and a task pass per round, and ties round r's update to rounds it does not
choose. The target estimators see the partial mask of round r (``greedy``'s saliency is recomputed there).

A ``prior`` (N,) score vector, added to x1 wherever the policy ranks locations (roll-outs, proposals, the gate),
is a default the flow must overrule to deviate from; the FM target stays 2·m* − 1.

``self`` targets (self-improvement): the flow's own proposals for round r — ``self_r`` noise draws integrated
with ``rollout_steps`` steps, hard top-k — are scored by the task loss and the best one becomes x1.

``objective = "joint"`` replaces all of the above by end-to-end training of the policy as it runs: the sampler
(the policy's own Euler steps and samples) integrates with gradient, every round's new locations are a
straight-through top-k (:func:`flowcs.masks.straight_through_topk`, relaxation ``relax``), round r's condition is
rebuilt from the masks of rounds < r (straight-through ones with ``condition_grad``), and one task loss is taken on
the full budget. Round 0 is thus judged by what the task reads after the last round (as A-DPS trains its steps)
rather than greedily at its own partial mask; the forward pass is exactly the policy's acquisition. No FM target:
the loss is the task loss. The task reads the batch's full measurement masked **once**, ``A_1ᴴ(m ⊙ y)``
(``Acquisition.observe``, as the straight-through peers train, :mod:`flowcs.policies.training`), not
``zero_filled(measure(x, m), m)``: the two agree on the hard forward values, but the latter is m² in the mask and
gives every unselected location exactly zero gradient, so a straight-through flow could only ever push its chosen
locations down. Why (mnist-classify validation pilots, docs/design.md): the one-step gate and the greedy roll-out
rounds lose to it at 4–8 %, and the linear measurement with DPS's softmax relaxation closes the gap to A-DPS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..acquisition import full_measurement, observer
from ..errors import ConfigError
from ..masks import ST_RELAXATIONS, select_topk, sigmoid_gate, split_budget
from ..operators.base import Operator
from ..rng import randn_rows
from ..tasks.base import Task
from ..training.kendall import KendallWeighting
from .model import FlowModel
from .path import LinearPath, fm_loss
from .policy import acquire_in_rounds, acquire_straight_through, integrate_scores
from .targets import TargetEstimator

LOSS_MODES = ("both", "fm", "task")
OBJECTIVES = ("gate", "joint")


@dataclass
class ObjectiveConfig:
    """The objective's settings, one definition for every experiment's flow config (the pixel experiments'
    ``FlowTrainConfig`` and MRI's ``FlowConfig`` extend it); :func:`objective_signature` reads them."""

    target: str = "saliency"  # saliency | greedy | best-of-r | self | none (flowcs.flow.targets)
    best_of_r: int = 16  # candidates per target for best-of-r and self
    greedy_chunks: int = 4  # saliency recomputations for the greedy target
    loss: str = "both"  # both (Kendall-weighted FM + task) | fm | task
    gate_a: float = 30.0
    gate_b: float = 1.0
    rounds: int = 1  # acquisition rounds per budget (1: the paper's one-shot policy)
    rollout_steps: int = 4  # Euler steps of the training roll-outs and self-improvement proposals
    # gate: FM + task loss through the sigmoid gate on the one-step estimate (paper Alg. 1); joint: end to end
    # through the policy's own sampler and all its rounds, task loss only (see the module docstring)
    objective: str = "gate"
    relax: str = "auto"  # joint: straight-through relaxation (flowcs.masks.straight_through_topk)
    condition_grad: bool = False  # joint: conditions between rounds measured with the straight-through masks


def objective_signature(cfg) -> dict:
    """The settings of a flow config (``loss``, ``target``, gate ``a``/``b``, ``best_of_r``, ``rounds``...) that
    change what a trained flow *is*: part of its checkpoint signature, so resuming with a changed objective is
    refused. Settings at their one-shot defaults are left out, so checkpoints from before they existed load."""
    sig = {"loss": cfg.loss, "target": cfg.target, "gate_a": float(cfg.gate_a), "gate_b": float(cfg.gate_b)}
    if cfg.target in ("best-of-r", "self"):
        sig["best_of_r"] = int(cfg.best_of_r)
    if cfg.target == "greedy":
        sig["greedy_chunks"] = int(cfg.greedy_chunks)
    if getattr(cfg, "rounds", 1) > 1:
        sig["rounds"] = int(cfg.rounds)
    if getattr(cfg, "objective", "gate") != "gate":
        sig["objective"] = cfg.objective
        sig["relax"] = cfg.relax
        if cfg.condition_grad:
            sig["condition_grad"] = True
    if getattr(cfg, "center_prior", 0.0):
        sig["center_prior"] = float(cfg.center_prior)
    return sig


def check_flow_settings(cfg, where: str = "flow") -> None:
    """One-line errors for objective settings that would fail only once training has started."""
    from .targets import TARGETS

    if cfg.target not in TARGETS:
        raise ConfigError(f"{where}.target {cfg.target!r}: choose one of {', '.join(TARGETS)}")
    if cfg.loss not in LOSS_MODES:
        raise ConfigError(f"{where}.loss {cfg.loss!r}: choose one of {', '.join(LOSS_MODES)}")
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"{where}.objective {cfg.objective!r}: choose one of {', '.join(OBJECTIVES)}")
    if cfg.objective == "joint" and (cfg.loss, cfg.target) != ("task", "none"):
        raise ConfigError(f"{where}.objective 'joint' trains on the task loss alone: set {where}.loss=task "
                          f"{where}.target=none")
    if cfg.relax not in ST_RELAXATIONS:
        raise ConfigError(f"{where}.relax {cfg.relax!r}: choose one of {', '.join(ST_RELAXATIONS)}")
    if cfg.target == "none" and cfg.loss != "task":
        raise ConfigError(f"{where}.target 'none' gives no flow-matching target: use {where}.loss=task with it")
    bad = [name for name in ("rounds", "rollout_steps", "greedy_chunks", "best_of_r", "steps")
           if getattr(cfg, name, 1) < 1]
    if bad:
        raise ConfigError(f"{where}: {', '.join(f'{b}={getattr(cfg, b)}' for b in bad)} must be >= 1")


class FlowTaskObjective(nn.Module):
    """Holds every trainable piece of flow training (velocity net + Kendall log-variances)."""

    def __init__(
        self,
        model: FlowModel,
        task: Task,
        operator: Operator,
        target: TargetEstimator,
        loss: str = "both",
        gate_a: float = 30.0,
        gate_b: float = 1.0,
        rounds: int = 1,
        rollout_steps: int = 4,
        prior: torch.Tensor | None = None,
        objective: str = "gate",
        samples: int = 1,
        relax: str = "auto",
        condition_grad: bool = False,
    ):
        super().__init__()
        if loss not in LOSS_MODES:
            raise ConfigError(f"unknown loss mode {loss!r}; choose one of {', '.join(LOSS_MODES)}")
        if target.kind == "none" and loss != "task":
            raise ConfigError("target 'none' gives no flow-matching target: use loss 'task' with it")
        if objective not in OBJECTIVES:
            raise ConfigError(f"unknown flow objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if relax not in ST_RELAXATIONS:
            raise ConfigError(f"unknown relaxation {relax!r}; choose one of {', '.join(ST_RELAXATIONS)}")
        if rounds < 1 or rollout_steps < 1:
            raise ConfigError(f"flow.rounds and flow.rollout_steps must be >= 1, got {rounds}, {rollout_steps}")
        self.model = model
        self.task = task
        self.operator = operator
        self.target = target
        self.loss_mode = loss
        self.gate_a, self.gate_b = gate_a, gate_b
        self.rounds, self.rollout_steps = int(rounds), int(rollout_steps)
        self.objective, self.samples = objective, int(samples)
        self.relax, self.condition_grad = relax, bool(condition_grad)
        self.register_buffer("prior", None if prior is None else prior.float().clone(), persistent=False)
        self.kendall = KendallWeighting(2)
        self.path = LinearPath()

    @classmethod
    def from_config(cls, model: FlowModel, task: Task, operator: Operator, target: TargetEstimator, cfg,
                    prior: torch.Tensor | None = None) -> FlowTaskObjective:
        """From an :class:`ObjectiveConfig`; ``joint`` integrates with the policy's own ``steps`` and ``samples``
        (the training pass is then the acquisition the policy performs)."""
        joint = cfg.objective == "joint"
        return cls(model, task, operator, target, cfg.loss, cfg.gate_a, cfg.gate_b, cfg.rounds,
                   cfg.steps if joint else cfg.rollout_steps, prior, cfg.objective,
                   getattr(cfg, "samples", 1) if joint else 1, cfg.relax, cfg.condition_grad)

    def _scores(self, condition, acquired, generator, samples: int = 1) -> torch.Tensor:
        s = integrate_scores(self.model, condition, acquired, self.operator.n_locations, self.rollout_steps,
                             samples, generator)
        return s if self.prior is None else s + self.prior

    def _task_loss(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        op = self.operator
        return self.task.loss(self.task.predict(op.zero_filled(op.measure(x, mask), mask), op.mask_to_image(mask)), y)

    def _joint(self, x, y, condition, acquired, k, generator, acquisition) -> dict[str, torch.Tensor]:
        sizes = split_budget(k, self.rounds)
        op = self.operator
        observe = acquisition.observe if acquisition is not None else observer(op, full_measurement(op, x))
        rebuild = None if acquisition is None else acquisition.condition
        _, mask = acquire_straight_through(lambda c, a: self._scores(c, a, generator, self.samples), rebuild,
                                           condition, acquired, sizes, self.relax, self.condition_grad)
        l_task = self.task.loss(self.task.predict(observe(mask), op.mask_to_image(mask)), y)
        zero = torch.zeros((), device=x.device)
        return {"loss": l_task, "fm": zero, "task": l_task.detach(), "s_fm": zero, "s_task": zero}

    @torch.no_grad()
    def _proposals(self, condition, acquired, k, generator) -> list[torch.Tensor]:
        """The current flow's masks for ``k`` new locations, one per noise draw (self-improvement candidates)."""
        return [select_topk(self._scores(condition, acquired, generator), k, acquired) for _ in range(self.target.r)]

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        condition: torch.Tensor,
        acquired: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
        acquisition=None,
    ) -> dict[str, torch.Tensor]:
        """One training pass; ``acquisition`` (a :class:`flowcs.acquisition.Acquisition`) measures the samples
        again between rounds (needed when ``rounds > 1``)."""
        if self.rounds > 1 and acquisition is None:
            raise ConfigError("flow training with several rounds needs the batch's acquisition (observe)")
        if self.objective == "joint":
            return self._joint(x, y, condition, acquired, k, generator, acquisition)
        if self.rounds > 1:
            sizes = split_budget(k, self.rounds)
            r = int(torch.randint(len(sizes), (1,), generator=generator)) if len(sizes) > 1 else 0
            if r > 0:
                with torch.no_grad():
                    acquired = acquire_in_rounds(lambda c, a: self._scores(c, a, generator), acquisition.condition,
                                                 condition, acquired, sizes[:r])
                    condition = acquisition.condition(acquired)
            k = sizes[r]
        proposals = self._proposals(condition, acquired, k, generator) if self.target.kind == "self" else None
        target_mask = self.target(x, y, k, acquired, generator, proposals)
        x1 = 2.0 * target_mask.float() - 1.0
        x0 = randn_rows(*x1.shape, generator=generator, device=x1.device)
        t = self.path.sample_t(x1.shape[0], generator, x1.device)
        x_t = self.path.interpolate(x0, x1, t)
        v = self.model(x_t, t, self.model.features(condition, acquired))
        l_fm = fm_loss(v, self.path.velocity(x0, x1))
        x1_hat = self.path.one_step_estimate(x_t, t, v)
        if self.prior is not None:  # the policy ranks x1 + prior: so does the gate
            x1_hat = x1_hat + self.prior
        soft = sigmoid_gate(x1_hat, k, t, self.gate_a, self.gate_b, acquired)
        l_task = self._task_loss(x, y, soft)
        if self.loss_mode == "both":
            loss = self.kendall(l_fm, l_task)
        elif self.loss_mode == "fm":
            loss = l_fm
        else:
            loss = l_task
        s = self.kendall.log_vars.detach()
        return {"loss": loss, "fm": l_fm.detach(), "task": l_task.detach(), "s_fm": s[0], "s_task": s[1]}
