"""The peer policies (LOUPE, DPS, A-DPS, ADS): budgets, exclusion, determinism, and their defining maths."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from flowcs.errors import ConfigError
from flowcs.masks import split_budget
from flowcs.operators import KSpaceLineOperator, PixelOperator
from flowcs.policies import (
    ADPSNet,
    ADPSPolicy,
    ADSPolicy,
    DPSPolicy,
    ImagePriorNet,
    LOUPEPolicy,
    PeerObjective,
    conditional_bernoulli,
    gumbel_topk,
    observer,
    rescale_probabilities,
)
from flowcs.policies.ads import FlowPriorObjective, round_sizes
from flowcs.policies.training import full_measurement
from flowcs.tasks.base import ClassificationTask
from flowcs.tasks.classifier import MLPClassifier

OP = PixelOperator(1, 8, 8)
N = OP.n_locations


def _images(b=6, seed=0):
    return torch.rand(b, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _acquired(b=6, first=5):
    acq = torch.zeros(b, N, dtype=torch.bool)
    for i in range(b):
        acq[i, torch.randperm(N, generator=torch.Generator().manual_seed(100 + i))[:first]] = True
    return acq


def _policy(name: str, op=OP, **kw):
    torch.manual_seed(0)
    if name == "loupe":
        pol = LOUPEPolicy(op.n_locations, seed=1, **kw)
    elif name == "dps":
        pol = DPSPolicy(op.n_locations, seed=1, **kw)
    elif name == "adps":
        pol = ADPSPolicy(ADPSNet(op.image_shape[0], op.n_locations, (4, 8, 8), 16, 2), op, steps=3, **kw)
    else:
        prior = ImagePriorNet(op.image_shape[0], (4, 8), 8)
        nn.init.normal_(prior.out.weight, std=0.3)  # a non-trivial velocity field
        pol = ADSPolicy(prior, op, samples=3, steps=2, per_round=2, **kw)
    with torch.no_grad():
        for p in pol.parameters() if isinstance(pol, nn.Module) else []:
            p.add_(0.1 * torch.randn_like(p))
    return pol


PEERS = ["loupe", "dps", "adps", "ads"]


def _propose(pol, x, budget, acquired, seed, op=OP, many=None):
    observe = observer(op, full_measurement(op, x))
    cond = torch.zeros(x.shape[0], 2, 8, 8)
    gen = torch.Generator().manual_seed(seed)
    if many is not None:
        return pol.propose_many(cond, many, acquired, gen, observe=observe)
    return pol.propose(cond, budget, acquired, gen, observe=observe)


# ADS has no test-mode switch (its masks always come from posterior disagreement): one case for it
CASES = [(n, m) for n in PEERS for m in ("topk", "sample") if (n, m) != ("ads", "sample")]


@pytest.mark.parametrize("name,mode", CASES)
def test_exact_budget_no_reselection_and_determinism(name, mode):
    pol = _policy(name, **({} if name == "ads" else {"test_mode": mode}))
    x, acq = _images(), _acquired()
    mask = _propose(pol, x, 7, acq, seed=3)
    assert mask.dtype == torch.bool and mask.shape == (6, N)
    assert (mask.sum(1) == 12).all()  # 5 acquired + exactly 7 new
    assert (mask & acq).sum() == acq.sum()  # every acquired location kept ...
    assert ((mask & ~acq).sum(1) == 7).all()  # ... and never chosen again
    again = _propose(pol, x, 7, acq, seed=3)
    assert torch.equal(mask, again)
    many = _propose(pol, x, None, acq, seed=3, many=[2, 7, 11])
    for b, m in many.items():
        assert ((m & ~acq).sum(1) == b).all() and (m & acq).sum() == acq.sum()


@pytest.mark.parametrize("name", ["adps", "ads"])
def test_sequential_policies_on_kspace_columns(name):
    op = KSpaceLineOperator(16, 16)
    pol = _policy(name, op=op)
    x = torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    lf = torch.zeros(3, 16, dtype=torch.bool)
    lf[:, 7:9] = True
    observe = observer(op, full_measurement(op, x))
    mask = pol.propose(torch.zeros(3, 1, 16, 16), 5, lf, torch.Generator().manual_seed(0), observe=observe)
    assert ((mask & ~lf).sum(1) == 5).all() and mask[:, 7:9].all()


@pytest.mark.parametrize("name", ["adps", "ads"])
def test_sequential_policy_needs_observe(name):
    pol = _policy(name)
    with pytest.raises(ConfigError, match="observe"):
        pol.propose(torch.zeros(2, 2, 8, 8), 3, None, torch.Generator().manual_seed(0))


def test_sequential_policy_adapts_to_what_it_measures():
    pol = _policy("adps")
    acq = _acquired(2)
    a = _propose(pol, _images(2, seed=1), 9, acq, seed=0)
    b = _propose(pol, _images(2, seed=2), 9, acq, seed=0)
    assert not torch.equal(a, b)


def _plackett_luce_inclusion(p: torch.Tensor, k: int) -> torch.Tensor:
    """Exact inclusion probabilities of k draws without replacement, draw j ∝ p among the remaining."""
    n = p.numel()
    incl = torch.zeros(n, dtype=torch.float64)
    for seq in itertools.permutations(range(n), k):
        prob, left = 1.0, 1.0
        for i in seq:
            prob *= float(p[i]) / left
            left -= float(p[i])
        incl[list(seq)] += prob
    return incl


@pytest.mark.parametrize("k", [1, 2])
def test_gumbel_topk_frequencies_match_softmax(k):
    logits = torch.tensor([1.5, 0.2, -0.7, 0.9, -1.5])
    draws = 40_000
    hard, st = gumbel_topk(logits.expand(draws, -1), k, generator=torch.Generator().manual_seed(0))
    assert (hard.sum(1) == k).all() and torch.equal(st, hard.float())
    freq = hard.double().mean(0)
    expected = _plackett_luce_inclusion(torch.softmax(logits.double(), 0), k)
    assert torch.allclose(freq, expected, atol=0.012), (freq, expected)
    if k == 1:
        assert torch.allclose(freq, torch.softmax(logits.double(), 0), atol=0.012)


@pytest.mark.parametrize("relax", ["softmax", "sigmoid"])
def test_straight_through_value_is_hard_and_gradient_flows(relax):
    logits = torch.randn(4, 10, requires_grad=True)
    acq = torch.zeros(4, 10, dtype=torch.bool)
    acq[:, 0] = True
    hard, st = gumbel_topk(logits, 3, acq, torch.Generator().manual_seed(1), tau=0.5, relax=relax)
    assert torch.equal(st.detach(), hard.float()) and not (hard & acq).any()
    (st * torch.arange(10.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert logits.grad[:, 0].abs().sum() == 0  # acquired locations get no gradient


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.3, 0.5, 0.9])
def test_loupe_rescaling_keeps_the_mean_at_the_target_rate(rate):
    gen = torch.Generator().manual_seed(0)
    for p in (torch.rand(3, 784, generator=gen, dtype=torch.float64),  # p̄ above and below the rate: both branches
              0.02 * torch.rand(3, 784, generator=gen, dtype=torch.float64),
              1 - 0.02 * torch.rand(3, 784, generator=gen, dtype=torch.float64)):
        q = rescale_probabilities(p, rate)
        assert torch.allclose(q.mean(1), torch.full((3,), rate, dtype=torch.float64), atol=1e-9)
        assert (q >= 0).all() and (q <= 1).all()
        # order preserved (a monotone map): p sorted by q is non-decreasing
        assert (p.gather(1, q.argsort(1)).diff(dim=1) >= -1e-12).all()


def test_loupe_relaxed_mask_has_the_expected_budget():
    acq = _acquired(4000, first=8)
    # E[σ(s(p − u))] → p as the sampling slope s grows: the mean count of new locations → the budget
    for slope, tol in ((12.0, 1.0), (200.0, 0.15)):
        pol = LOUPEPolicy(N, sample_slope=slope, seed=0)
        soft = pol.relaxed_mask(10, acq, torch.Generator().manual_seed(0)).detach()
        assert (soft[acq] == 0).all() and (soft >= 0).all() and (soft <= 1).all()
        assert abs(float(soft.sum(1).mean()) - 10) < tol, (slope, float(soft.sum(1).mean()))


def test_conditional_bernoulli_is_exact():
    p = torch.tensor([0.1, 0.5, 0.8, 0.3, 0.6])
    k, draws = 2, 30_000
    acq = torch.zeros(draws, 5, dtype=torch.bool)
    acq[:, 4] = True  # not available
    masks = conditional_bernoulli(p, k, acq, torch.Generator().manual_seed(0))
    assert (masks.sum(1) == k).all() and not masks[:, 4].any()
    w = p / (1 - p)
    subsets = list(itertools.combinations(range(4), k))
    weight = torch.tensor([math.prod(float(w[i]) for i in s) for s in subsets], dtype=torch.float64)
    expected = weight / weight.sum()
    codes = {s: i for i, s in enumerate(subsets)}
    counts = torch.zeros(len(subsets), dtype=torch.float64)
    for row in masks:
        counts[codes[tuple(row.nonzero().flatten().tolist())]] += 1
    assert torch.allclose(counts / draws, expected, atol=0.01), (counts / draws, expected)


class _ScaledNoisePrior(nn.Module):
    """Exact flow from N(0, I) to N(0, diag(σ²)): posterior samples have per-pixel variance σ² off the mask."""

    def __init__(self, sigma: torch.Tensor):
        super().__init__()
        self.sigma = sigma
        self.shift, self.scale = torch.tensor(0.0), torch.tensor(1.0)

    def forward(self, z, t):
        t = t.reshape(-1, 1, 1, 1)
        return (self.sigma - 1) * z / ((1 - t) + t * self.sigma)

    def to_z(self, x):
        return x

    def to_x(self, z):
        return z


def test_ads_measures_where_posterior_samples_disagree_most():
    sigma = torch.full((1, 1, 8, 8), 0.1)
    sigma[0, 0, 2, 5] = 3.0  # largest spread, but already measured: must not be picked
    sigma[0, 0, 6, 1] = 2.0  # largest spread among the free locations
    sigma[0, 0, 4, 4] = 1.0
    pol = ADSPolicy(_ScaledNoisePrior(sigma), OP, samples=64, steps=4, per_round=1)
    x = torch.zeros(3, 1, 8, 8)
    acq = torch.zeros(3, N, dtype=torch.bool)
    acq[:, 2 * 8 + 5] = True
    observe = observer(OP, full_measurement(OP, x))
    mask = pol.propose(torch.zeros(3, 2, 8, 8), 2, acq, torch.Generator().manual_seed(0), observe=observe)
    new = (mask & ~acq).nonzero()[:, 1].reshape(3, 2)
    assert (new.sort(1).values == torch.tensor([4 * 8 + 4, 6 * 8 + 1])).all()
    # the posterior samples agree with the measurement exactly where measured
    samples = pol.posterior(observe(acq), acq, torch.Generator().manual_seed(0))
    assert samples.shape == (3, 64, 1, 8, 8) and samples[:, :, 0, 2, 5].abs().max() == 0
    var = samples.var(1)[0, 0]
    assert var[6, 1] > 2.0 and var[0, 0] < 0.05


def test_round_sizes_and_budget_split():
    assert round_sizes([3, 8], 2) == [2, 1, 2, 2, 1]
    assert sum(round_sizes([5], 1)) == 5
    assert split_budget(10, 4) == [3, 3, 2, 2] and split_budget(2, 4) == [1, 1] and split_budget(0, 3) == []


def test_flow_prior_objective_trains():
    net = ImagePriorNet(1, (4, 8), 8, shift=0.5, scale=0.5)
    obj = FlowPriorObjective(net)
    out = obj(_images(8), None, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and net.out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["loupe", "dps", "adps"])
def test_peer_objective_trains_the_peer_against_a_frozen_task(name):
    torch.manual_seed(0)
    task = ClassificationTask(MLPClassifier(64, (16,), 3, 0.3)).freeze()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    pol = _policy(name)
    obj = PeerObjective(pol, task, OP, lambda x, g: _acquired(x.shape[0], 4), 6)
    obj.train()
    assert not task.model.training  # fit() calls train(): the task stays in eval mode
    assert all(not k.startswith("task") for k in obj.state_dict())  # the checkpoint holds the peer only
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.5)
    out = obj(_images(6), torch.tensor([0, 1, 2, 0, 1, 2]), torch.Generator().manual_seed(0))
    out["loss"].backward()
    grads = [p.grad for p in pol.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    opt.step()
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, before[k])
    if name != "loupe":
        assert abs(float(out["new_locations"]) - 6) < 1e-5  # straight-through: exactly the budget


@pytest.mark.parametrize("op", [OP, KSpaceLineOperator(8, 8)], ids=["pixel", "kspace"])
def test_observer_is_linear_in_soft_masks_and_exact_on_hard_ones(op):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, *op.image_shape, generator=gen)
    observe = observer(op, full_measurement(op, x))
    hard = torch.rand(2, op.n_locations, generator=gen) < 0.4
    assert torch.allclose(observe(hard), op.zero_filled(op.measure(x, hard), hard), atol=1e-6)
    soft = torch.rand(2, op.n_locations, generator=gen)
    assert torch.allclose(observe(0.5 * soft), 0.5 * observe(soft), atol=1e-6)
    # the learning signal reaches unselected locations (m = 0): d observe / d m ≠ 0 there
    m = hard.float().requires_grad_(True)
    (observe(m) * torch.randn(2, *op.image_shape, generator=gen)).sum().backward()
    assert (m.grad[~hard] != 0).any()
