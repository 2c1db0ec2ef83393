"""The joint objective: end-to-end training through the policy's own sampler and rounds (straight-through top-k)."""

from __future__ import annotations

import pytest
import torch

from flowcs.acquisition import UNetInput
from flowcs.errors import ConfigError
from flowcs.experiments.pixel import FlowTrainConfig, build_flow_objective
from flowcs.flow.objective import FlowTaskObjective, check_flow_settings, objective_signature
from flowcs.flow.policy import FlowPolicy, acquire_straight_through
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


@pytest.mark.parametrize("rounds", [1, 3])
def test_training_pass_is_exactly_the_policys_acquisition(rounds):
    x, acq = batch(6)
    task, y, model = classifier_task(), labels(6), flow_model()
    model.eval()
    obj = FlowTaskObjective(model, task, OP, TargetEstimator("none", task, OP), loss="task", rounds=rounds,
                            rollout_steps=3, objective="joint")
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
    assert objective_signature(cfg)["objective"] == "joint"
    assert "objective" not in objective_signature(FlowTrainConfig())  # older checkpoints keep their signature
    task = classifier_task()
    obj = build_flow_objective(flow_model(), task, OP, cfg)
    assert (obj.objective, obj.rollout_steps, obj.rounds) == ("joint", 3, 4)  # the policy's own Euler steps
    with pytest.raises(ConfigError, match="flow.loss=task flow.target=none"):
        check_flow_settings(FlowTrainConfig(objective="joint", loss="both"))
    with pytest.raises(ConfigError, match="flow.objective 'unroll'"):
        check_flow_settings(FlowTrainConfig(objective="unroll"))
