"""The flow policy: integrate the learned velocity field from noise to location scores."""

from __future__ import annotations

import torch

from ..policies.base import ScorePolicy
from ..rng import randn_rows
from .model import FlowModel
from .sampler import euler


class FlowPolicy(ScorePolicy):
    """Scores = Euler-integrated x1 of the conditional flow; the mask is their hard top-k.

    With ``samples > 1`` several noise draws per condition are integrated in
    one batch and their final scores averaged (an ensemble over the learned
    mask distribution); ``samples = 1`` draws one mask from it.
    """

    name = "flow"
    adaptive = True

    def __init__(self, model: FlowModel, n_locations: int, steps: int = 20, samples: int = 1):
        super().__init__(n_locations)
        self.model = model
        self.steps = steps
        self.samples = samples

    @torch.inference_mode()
    def scores(self, condition, acquired, generator=None):
        self.model.eval()
        feats = self.model.features(condition)
        b = condition.shape[0]
        x0 = randn_rows(b, self.samples, self.n_locations, generator=generator, device=condition.device)
        x0 = x0.reshape(b * self.samples, self.n_locations)
        x1 = euler(lambda x, t: self.model(x, t, feats), x0, self.steps)
        return x1.reshape(b, self.samples, self.n_locations).mean(1)
