"""The flow policy: integrate the learned velocity field from noise to location scores, in one or several rounds."""

from __future__ import annotations

import torch

from ..acquisition import Condition
from ..errors import ConfigError
from ..masks import select_topk, split_budget, straight_through_topk
from ..operators.base import Operator
from ..policies.base import Observe, Policy, ScorePolicy
from ..rng import randn_rows
from .model import FlowModel
from .sampler import euler

__all__ = ["FlowPolicy", "integrate_scores", "acquire_in_rounds", "acquire_straight_through"]


def integrate_scores(model: FlowModel, condition: torch.Tensor, acquired: torch.Tensor, n_locations: int,
                     steps: int, samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, N) scores: the mean over ``samples`` noise draws of the Euler-integrated x1 (no autograd context set:
    callers choose inference mode, no_grad or training)."""
    feats = model.features(condition, acquired)
    b = condition.shape[0]
    x0 = randn_rows(b, samples, n_locations, generator=generator, device=condition.device)
    x0 = x0.reshape(b * samples, n_locations)
    x1 = euler(lambda x, t: model(x, t, feats), x0, steps)
    return x1.reshape(b, samples, n_locations).mean(1)


def acquire_in_rounds(scores, rebuild, condition: torch.Tensor, acquired: torch.Tensor, sizes: list[int]
                      ) -> torch.Tensor:
    """Acquire ``sizes[r]`` locations per round: round r takes the top scores given everything acquired so far.

    ``scores(condition, acquired) -> (B, N)``; ``rebuild(acquired) -> condition`` measures what is acquired and
    builds the next round's condition (``condition`` is round 0's). Returns everything acquired at the end.
    """
    taken = acquired.bool()
    for r, c in enumerate(sizes):
        if r > 0:
            condition = rebuild(taken)
        taken = taken | select_topk(scores(condition, taken), c, taken)
    return taken


def acquire_straight_through(scores, rebuild, condition: torch.Tensor, acquired: torch.Tensor, sizes: list[int],
                             relax: str = "auto", condition_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`acquire_in_rounds` with gradient: every round's new locations are a straight-through top-k
    (:func:`flowcs.masks.straight_through_topk` with ``relax``).

    Returns ``(taken, mask)``: the bool mask of everything acquired, and a float mask equal to it whose gradient
    reaches every round's scores, so one task loss on the final mask trains round 0 for what the task reads after
    the last round. Round r's condition is rebuilt from the masks of rounds < r: the hard ones by default, or
    (``condition_grad``) the straight-through ones, equal in value, so the task loss also reaches earlier rounds
    through what later rounds see, as A-DPS trains. Either way the forward pass is the policy's acquisition.
    """
    taken = acquired.bool()
    mask = taken.float()
    for r, c in enumerate(sizes):
        if r > 0:
            condition = rebuild(mask if condition_grad else taken)
        hard, st = straight_through_topk(scores(condition, taken), c, taken, relax)
        mask = mask + st
        taken = taken | hard
    return taken, mask


class FlowPolicy(ScorePolicy):
    """Scores = Euler-integrated x1 of the conditional flow; the mask is their hard top-k.

    With ``samples > 1`` several noise draws per condition are integrated in one batch and their final scores
    averaged (an ensemble over the learned mask distribution); ``samples = 1`` draws one mask from it.

    ``prior`` (N,) is added to the scores before the top-k: a default the flow has to overrule, e.g. a preference
    for the k-space centre, so that where the flow is unsure the policy falls back to the prior's mask.

    With ``rounds = R > 1`` the policy is *sequential*: a budget is acquired in R rounds of ⌈k/R⌉ or ⌊k/R⌋
    locations, and before every round after the first the samples are measured with everything acquired so far
    (``observe``) and the condition is rebuilt from that (``condition_fn``, e.g. the U-Net input or the
    zero-filled magnitude): round r is conditioned on rounds 0…r−1. One model serves every round and budget.
    """

    name = "flow"
    adaptive = True

    def __init__(self, model: FlowModel, n_locations: int, steps: int = 20, samples: int = 1, rounds: int = 1,
                 condition_fn: Condition | None = None, operator: Operator | None = None,
                 prior: torch.Tensor | None = None):
        super().__init__(n_locations)
        if rounds < 1:
            raise ConfigError(f"flow.rounds must be >= 1, got {rounds}")
        if rounds > 1 and (condition_fn is None or operator is None):
            raise ConfigError("a flow policy with several rounds needs the condition builder and the operator")
        self.model = model
        self.steps, self.samples, self.rounds = steps, samples, int(rounds)
        self.condition_fn, self.operator = condition_fn, operator
        self.prior = prior  # (N,) added to the scores before top-k (see FlowTaskObjective)
        self.sequential = self.rounds > 1

    @torch.inference_mode()
    def scores(self, condition, acquired, generator=None):
        self.model.eval()
        s = integrate_scores(self.model, condition, acquired, self.n_locations, self.steps, self.samples, generator)
        return s if self.prior is None else s + self.prior.to(s.device, s.dtype)

    @torch.inference_mode()
    def _new_locations(self, condition, budget, acquired, generator, observe: Observe | None = None):
        if self.rounds == 1:
            return select_topk(self.scores(condition, acquired, generator), budget, acquired)

        def rebuild(taken):
            return self.condition_fn(self.operator, observe(taken), taken)

        taken = acquire_in_rounds(lambda c, a: self.scores(c, a, generator), rebuild, condition, acquired,
                                  split_budget(budget, self.rounds))
        return taken & ~acquired

    def propose_many(self, condition, budgets, acquired=None, generator=None, observe=None):
        if self.rounds == 1:  # scores do not depend on the budget: one trajectory, nested masks
            return super().propose_many(condition, budgets, acquired, generator, observe)
        return Policy.propose_many(self, condition, budgets, acquired, generator, observe)
