"""Training objective of the flow policy: FM regression + task loss through the sigmoid gate.

One forward pass (paper Alg. 1, SPEC §2–3):
  x1 = 2·m* − 1 from the target estimator, x_t on the linear path, v = v_θ(x_t, t, c),
  L_FM = ‖v − (x1 − x0)‖², x̂1 = x_t + (1 − t)·v,
  m_soft = gate(x̂1; k, κ(t)), L_task = task loss on the soft-masked measurement,
  L = Kendall(L_FM, L_task) (or one of the two for the ablations).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..masks import sigmoid_gate
from ..operators.base import Operator
from ..rng import randn_rows
from ..tasks.base import Task
from ..training.kendall import KendallWeighting
from .model import FlowModel
from .path import LinearPath, fm_loss
from .targets import TargetEstimator

LOSS_MODES = ("both", "fm", "task")


def objective_signature(cfg) -> dict:
    """The settings of a flow config (``loss``, ``target``, gate ``a``/``b``, ``best_of_r``) that change what a
    trained flow *is*: part of its checkpoint signature, so resuming with a changed objective is refused."""
    sig = {"loss": cfg.loss, "target": cfg.target, "gate_a": float(cfg.gate_a), "gate_b": float(cfg.gate_b)}
    if cfg.target == "best-of-r":
        sig["best_of_r"] = int(cfg.best_of_r)
    return sig


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
    ):
        super().__init__()
        if loss not in LOSS_MODES:
            raise ConfigError(f"unknown loss mode {loss!r}; choose one of {', '.join(LOSS_MODES)}")
        if target.kind == "none" and loss != "task":
            raise ConfigError("target 'none' gives no flow-matching target: use loss 'task' with it")
        self.model = model
        self.task = task
        self.operator = operator
        self.target = target
        self.loss_mode = loss
        self.gate_a, self.gate_b = gate_a, gate_b
        self.kendall = KendallWeighting(2)
        self.path = LinearPath()

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        condition: torch.Tensor,
        acquired: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        target_mask = self.target(x, y, k, acquired, generator)
        x1 = 2.0 * target_mask.float() - 1.0
        x0 = randn_rows(*x1.shape, generator=generator, device=x1.device)
        t = self.path.sample_t(x1.shape[0], generator, x1.device)
        x_t = self.path.interpolate(x0, x1, t)
        v = self.model(x_t, t, self.model.features(condition))
        l_fm = fm_loss(v, self.path.velocity(x0, x1))
        x1_hat = self.path.one_step_estimate(x_t, t, v)
        soft = sigmoid_gate(x1_hat, k, t, self.gate_a, self.gate_b, acquired)
        op = self.operator
        pred = self.task.predict(op.zero_filled(op.measure(x, soft), soft), op.mask_to_image(soft))
        l_task = self.task.loss(pred, y)
        if self.loss_mode == "both":
            loss = self.kendall(l_fm, l_task)
        elif self.loss_mode == "fm":
            loss = l_fm
        else:
            loss = l_task
        s = self.kendall.log_vars.detach()
        return {"loss": loss, "fm": l_fm.detach(), "task": l_task.detach(), "s_fm": s[0], "s_task": s[1]}
