import math

import pytest
import torch

from flowcs.errors import ConfigError
from flowcs.masks import (
    budget_to_rate,
    kappa,
    random_mask,
    random_masks_varying,
    rate_to_budget,
    select_topk,
    sigmoid_gate,
    topk_threshold,
)


def test_rate_budget_conversion():
    assert rate_to_budget(4, 784) == 31
    assert rate_to_budget(1, 784) == 8
    assert rate_to_budget(100, 784) == 784
    assert rate_to_budget(0.01, 784) == 1  # never an empty budget
    assert budget_to_rate(31, 784) == pytest.approx(3.954, abs=1e-3)
    for b in range(1, 785):
        assert rate_to_budget(budget_to_rate(b, 784), 784) == b


@pytest.mark.parametrize("rate", [0, -1, 100.5, float("nan"), "4"])
def test_rate_out_of_range_is_clear(rate):
    with pytest.raises(ConfigError, match="out of range"):
        rate_to_budget(rate, 784)


def test_topk_exactly_k_and_never_acquired():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(16, 100, generator=g)
    acquired = torch.rand(16, 100, generator=g) < 0.2
    acquired[:, 0] = True
    scores[:, 0] = 100.0  # the best score is already acquired
    new = select_topk(scores, 10, acquired)
    assert new.dtype == torch.bool
    assert (new.sum(1) == 10).all()
    assert not (new & acquired).any()
    # every chosen score beats every rejected non-acquired score
    for i in range(16):
        free = ~acquired[i]
        assert scores[i][new[i]].min() >= scores[i][free & ~new[i]].max()


def test_topk_ties_break_to_lower_index():
    scores = torch.zeros(2, 6)
    new = select_topk(scores, 2)
    assert new[0].tolist() == [True, True, False, False, False, False]
    acq = torch.tensor([[True, False, False, False, False, False]] * 2)
    assert select_topk(scores, 2, acq)[0].tolist() == [False, True, True, False, False, False]


def test_topk_rejects_nan_and_overbudget():
    with pytest.raises(ConfigError, match="NaN"):
        select_topk(torch.tensor([[0.0, math.nan]]), 1)
    acq = torch.tensor([[True, True, False]])
    with pytest.raises(ConfigError, match="exceeds"):
        select_topk(torch.zeros(1, 3), 2, acq)


def test_threshold_separates_k_entries():
    s = torch.tensor([[5.0, 1.0, 3.0, 4.0, 2.0]])
    tau = topk_threshold(s, 2)
    assert tau.item() == pytest.approx(3.5)
    acq = torch.tensor([[True, False, False, False, False]])
    assert topk_threshold(s, 2, acq).item() == pytest.approx(2.5)  # 5 is acquired: top-2 of rest = {4, 3}
    # per-row budgets
    tau = topk_threshold(torch.cat([s, s]), torch.tensor([1, 3]))
    assert tau.flatten().tolist() == pytest.approx([4.5, 2.5])


def test_gate_tends_to_hard_mask_and_passes_gradients():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 50, generator=g, requires_grad=True)
    acq = torch.zeros(4, 50, dtype=torch.bool)
    acq[:, 3] = True
    hard = select_topk(s.detach(), 7, acq) | acq
    soft = sigmoid_gate(s, 7, torch.ones(4), a=1e4, b=1.0, acquired=acq)
    assert torch.allclose(soft, hard.float(), atol=1e-3)
    soft = sigmoid_gate(s, 7, torch.full((4,), 0.5), a=30, b=1, acquired=acq)
    assert ((soft >= 0) & (soft <= 1)).all()
    assert (soft[:, 3] == 1).all()
    soft.sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert (s.grad[:, 3] == 0).all()  # acquired entries are constants


def test_gate_softer_at_early_times():
    s = torch.linspace(-1, 1, 20)[None]
    early = sigmoid_gate(s, 5, torch.tensor([0.01]))
    late = sigmoid_gate(s, 5, torch.tensor([1.0]))
    assert (early - 0.5).abs().max() < (late - 0.5).abs().max()
    assert kappa(torch.tensor(0.5), 30, 2).item() == pytest.approx(7.5)


def test_random_masks_seeded_and_exact():
    a = random_mask(3, 40, 5, generator=torch.Generator().manual_seed(3))
    b = random_mask(3, 40, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and (a.sum(1) == 5).all()
    m = random_masks_varying(torch.tensor([1, 5, 40]), 40, torch.Generator().manual_seed(0))
    assert m.sum(1).tolist() == [1, 5, 40]
