"""The joint objective: end-to-end training through the policy's own sampler and rounds (straight-through top-k)."""

from __future__ import annotations

import pytest
import torch

from flowcs.acquisition import UNetInput
from flowcs.errors import ConfigError
from flowcs.experiments.pixel import FlowTrainConfig, build_flow_objective
from flowcs.flow.objective import FlowTaskObjective, check_flow_settings, objective_signature
from flowcs.flow.policy import FlowPolicy, acquire_straight_through, integrate_scores
from flowcs.flow.targets import TargetEstimator
from flowcs.masks import select_topk, split_budget, straight_through_topk
from flowcs.tasks.base import ClassificationTask
from flowcs.tasks.classifier import MLPClassifier
from test_sequential import OP, batch, flow_model


def classifier_task(seed: int = 0) -> ClassificationTask:
    torch.manual_seed(seed)
    return ClassificationTask(MLPClassifier(64, (16,), 10, 0.0)).freeze()


def labels(n: int) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(3))


def test_straight_through_topk_is_hard_forward_and_soft_backward():
    scores = torch.randn(4, 30, generator=torch.Generator().manual_seed(0)).requires_grad_()
    acquired = torch.zeros(4, 30, dtype=torch.bool)
    acquired[:, :5] = True
    hard, mask = straight_through_topk(scores * 1000.0, 7, acquired)  # far from unit scale: z-scored inside
    assert torch.equal(hard, select_topk(scores.detach(), 7, acquired))
    assert torch.equal(mask.detach(), hard.float()) and not bool((hard & acquired).any())
    (mask * torch.arange(30.0)).sum().backward()
    grad = scores.grad
    assert bool((grad[:, :5] == 0).all())  # acquired locations get no gradient
    assert bool((grad[:, 5:].abs() > 0).all())  # every free location does, selected or not
    unscaled = scores.detach().clone().requires_grad_()
    (straight_through_topk(unscaled, 7, acquired)[1] * torch.arange(30.0)).sum().backward()
    assert torch.allclose(grad, unscaled.grad, rtol=1e-3, atol=1e-6)  # z-scores: the scale divides out


def test_rounds_are_exact_never_reselect_and_pass_gradient_to_round_zero():
    _, acq = batch(3)
    leaves, rebuilt = [], []

    def scores(condition, taken):
        s = torch.randn(taken.shape, generator=torch.Generator().manual_seed(len(leaves))).requires_grad_()
        leaves.append(s)
        return s

    def rebuild(taken):
        rebuilt.append(taken.clone())
        return acq.condition(taken)

    sizes = split_budget(10, 3)
    taken, mask = acquire_straight_through(scores, rebuild, acq.condition(), acq.acquired, sizes)
    assert ((taken & ~acq.acquired).sum(1) == 10).all() and bool(taken[acq.acquired].all())
    assert torch.equal(mask.detach(), taken.float())  # a location chosen twice would count 2
    assert [int(t.sum(1)[0]) for t in rebuilt] == [4 + 4, 4 + 7]  # round r sees rounds < r (4 first pixels)
    (mask * torch.linspace(-1, 1, OP.n_locations)).sum().backward()
    assert all(float(leaf.grad.abs().sum()) > 0 for leaf in leaves)  # round 0 included


@pytest.mark.parametrize("relax", ["softmax", "sigmoid", "auto"])
def test_dps_relaxations_are_hard_forward_and_reach_unselected_locations(relax):
    scores = torch.randn(3, 30, generator=torch.Generator().manual_seed(1)).requires_grad_()
    acquired = torch.zeros(3, 30, dtype=torch.bool)
    acquired[:, 10:14] = True
    hard, mask = straight_through_topk(scores, 6, acquired, relax)
    assert torch.equal(hard, select_topk(scores.detach(), 6, acquired)) and torch.equal(mask.detach(), hard.float())
    (mask * torch.linspace(-1, 1, 30)).sum().backward()
    assert bool((scores.grad[acquired] == 0).all())
    assert bool((scores.grad[~acquired & ~hard].abs() > 0).all())  # locations not chosen still learn
    with pytest.raises(ConfigError, match="unknown relaxation 'gumbel'"):
        straight_through_topk(scores, 6, acquired, "gumbel")


def test_joint_task_loss_measures_once_so_unselected_locations_get_gradient():
    """m² (zero_filled(measure(x, m), m)) would give every unselected location exactly zero gradient; with a
    per-location relaxation (sigmoid) that would leave their scores without gradient too."""
    x, acq = batch(4)
    task, y = classifier_task(), labels(4)
    obj = FlowTaskObjective(flow_model(), task, OP, TargetEstimator("none", task, OP), loss="task", rounds=1,
                            rollout_steps=2, objective="joint", relax="sigmoid")
    leaf = torch.randn(4, OP.n_locations, generator=torch.Generator().manual_seed(2)).requires_grad_()
    obj._scores = lambda condition, acquired, generator, samples=1: leaf
    out = obj(x, y, acq.condition(), acq.acquired, 5, torch.Generator().manual_seed(0), acquisition=acq)
    out["loss"].backward()
    unselected = ~acq.acquired & ~select_topk(leaf.detach(), 5, acq.acquired)
    assert float((leaf.grad[unselected] != 0).float().mean()) > 0.9  # zero only where the pixel is 0
    assert bool((leaf.grad[acq.acquired] == 0).all())


@pytest.mark.parametrize("condition_grad", [False, True])
def test_condition_grad_measures_later_rounds_with_the_straight_through_mask(condition_grad):
    _, acq = batch(3)
    seen = []

    def rebuild(mask):
        seen.append(mask)
        return acq.condition(mask)

    model = flow_model()
    scores = lambda c, a: integrate_scores(model, c, a, OP.n_locations, 1, 1, torch.Generator().manual_seed(0))  # noqa: E731
    taken, mask = acquire_straight_through(scores, rebuild, acq.condition(), acq.acquired, [3, 3], "auto",
                                           condition_grad)
    round0 = seen[0].detach().float()
    assert len(seen) == 1 and bool((round0.sum(1) == 4 + 3).all())  # the first 4 pixels and round 0's 3
    assert bool(((round0 == 0) | (round0 == 1)).all()) and bool(taken[round0.bool()].all())
    assert seen[0].requires_grad == condition_grad  # the frozen encoder passes it on, its weights get none
    if condition_grad:
        mask.sum().backward()
        assert all(p.grad is None for p in model.encoder.parameters())


@pytest.mark.parametrize(("rounds", "relax", "condition_grad"), [(1, "zscore", False), (3, "auto", False),
                                                                  (3, "auto", True)])
def test_training_pass_is_exactly_the_policys_acquisition(rounds, relax, condition_grad):
    x, acq = batch(6)
    task, y, model = classifier_task(), labels(6), flow_model()
    model.eval()
    obj = FlowTaskObjective(model, task, OP, TargetEstimator("none", task, OP), loss="task", rounds=rounds,
                            rollout_steps=3, objective="joint", relax=relax, condition_grad=condition_grad)
    out = obj(x, y, acq.condition(), acq.acquired, 9, torch.Generator().manual_seed(5), acquisition=acq)
    policy = FlowPolicy(model, OP.n_locations, steps=3, rounds=rounds, condition_fn=UNetInput(), operator=OP)
    mask = policy.propose(acq.condition(), 9, acq.acquired, torch.Generator().manual_seed(5),
                          observe=acq.observe).float()
    with torch.no_grad():
        expected = task.loss(task.predict(OP.zero_filled(OP.measure(x, mask), mask), OP.mask_to_image(mask)), y)
    assert float(out["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
    out["loss"].backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.velocity.parameters())


def test_joint_settings_are_checked_and_signed():
    cfg = FlowTrainConfig(objective="joint", loss="task", target="none", steps=3, rollout_steps=2, rounds=4)
    check_flow_settings(cfg)
    assert objective_signature(cfg)["objective"] == "joint" and objective_signature(cfg)["relax"] == "auto"
    assert objective_signature(FlowTrainConfig(objective="joint", condition_grad=True))["condition_grad"]
    assert "objective" not in objective_signature(FlowTrainConfig())  # older checkpoints keep their signature
    task = classifier_task()
    obj = build_flow_objective(flow_model(), task, OP, cfg)
    assert (obj.objective, obj.rollout_steps, obj.rounds) == ("joint", 3, 4)  # the policy's own Euler steps
    with pytest.raises(ConfigError, match="flow.loss=task flow.target=none"):
        check_flow_settings(FlowTrainConfig(objective="joint", loss="both"))
    with pytest.raises(ConfigError, match="flow.relax 'gumbel'"):
        check_flow_settings(FlowTrainConfig(objective="joint", loss="task", target="none", relax="gumbel"))
    with pytest.raises(ConfigError, match="flow.objective 'unroll'"):
        check_flow_settings(FlowTrainConfig(objective="unroll"))
