"""A task = a frozen model + its loss + its metric, fed with sub-sampled measurements.

The flow policy and every baseline see the task only through this interface,
so swapping the classifier for a reconstruction network (or a user's own
model) changes nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import accuracy, mae
from .unet import network_input


class Task(ABC):
    """Wraps a trained model; ``predict`` takes the zero-filled measurement and the mask map."""

    name: str = "task"
    metric: str = "metric"
    higher_is_better: bool = True

    def __init__(self, model: nn.Module):
        self.model = model

    def freeze(self) -> Task:
        """Eval mode and no parameter gradients (gradients still flow to the *inputs*)."""
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self

    @abstractmethod
    def predict(self, zero_filled: torch.Tensor, mask_image: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def loss(self, pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor: ...

    @abstractmethod
    def score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample value of :attr:`metric`."""


class ClassificationTask(Task):
    name = "classify"
    metric = "accuracy"
    higher_is_better = True

    def predict(self, zero_filled, mask_image):
        return self.model(zero_filled)

    def loss(self, pred, target, reduction="mean"):
        return F.cross_entropy(pred, target, reduction=reduction)

    def score(self, pred, target):
        return accuracy(pred, target)


class ReconstructionTask(Task):
    """Image reconstruction by a U-Net from (zero-filled, mask); L1 loss, MAE metric."""

    name = "reconstruct"
    metric = "mae"
    higher_is_better = False

    def predict(self, zero_filled, mask_image):
        return self.model(network_input(zero_filled, mask_image))

    def loss(self, pred, target, reduction="mean"):
        per = (pred - target).abs().flatten(1).mean(1)
        return per.mean() if reduction == "mean" else per

    def score(self, pred, target):
        return mae(pred.clamp(0, 1), target)
