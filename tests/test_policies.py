import pytest
import torch

from flowcs.errors import ConfigError
from flowcs.experiments.pixel import FlowNetConfig, build_flow_model
from flowcs.flow.policy import FlowPolicy
from flowcs.operators import PixelOperator
from flowcs.policies import RandomPolicy
from flowcs.tasks.unet import ReconUNet


def _flow_policy(steps=3):
    torch.manual_seed(0)
    op = PixelOperator(1, 12, 12)
    unet = ReconUNet(2, 1, (4, 8, 8), 8)
    model = build_flow_model(unet, op, FlowNetConfig([4, 8, 8], 8, 16))
    # non-zero output layer so that scores depend on the input
    torch.nn.init.normal_(model.velocity.out.weight, std=0.5)
    return FlowPolicy(model, op.n_locations, steps=steps), op


@pytest.mark.parametrize("which", ["random", "flow"])
def test_policy_returns_acquired_plus_exact_budget(which):
    policy, op = _flow_policy() if which == "flow" else (RandomPolicy(144), PixelOperator(1, 12, 12))
    cond = torch.rand(5, 2, 12, 12)
    acquired = torch.zeros(5, 144, dtype=torch.bool)
    acquired[:, :10] = True
    mask = policy.propose(cond, 7, acquired, torch.Generator().manual_seed(0))
    assert mask.shape == (5, 144) and mask.dtype == torch.bool
    assert (mask.sum(1) == 17).all()
    assert mask[:, :10].all()
    again = policy.propose(cond, 7, acquired, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)  # deterministic under a seed
    many = policy.propose_many(cond, [3, 7], acquired, torch.Generator().manual_seed(0))
    assert (many[3].sum(1) == 13).all() and (many[7].sum(1) == 17).all()


def test_flow_policy_masks_are_nested_across_budgets():
    policy, _ = _flow_policy()
    cond = torch.rand(4, 2, 12, 12)
    many = policy.propose_many(cond, [5, 20, 40], None, torch.Generator().manual_seed(1))
    assert (many[5] <= many[20]).all() and (many[20] <= many[40]).all()


def test_flow_policy_depends_on_condition():
    policy, _ = _flow_policy()
    a = policy.scores(torch.zeros(1, 2, 12, 12), None, torch.Generator().manual_seed(0))
    b = policy.scores(torch.ones(1, 2, 12, 12), None, torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)


def test_policy_rejects_bad_budget_and_shapes():
    pol = RandomPolicy(144)
    with pytest.raises(ConfigError, match="exceeds"):
        pol.propose(torch.zeros(2, 2, 12, 12), 145)
    with pytest.raises(ConfigError, match="acquired mask must have shape"):
        pol.propose(torch.zeros(2, 2, 12, 12), 3, torch.zeros(2, 100, dtype=torch.bool))
