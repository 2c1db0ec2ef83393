"""Property-based tests (hypothesis) of the invariants the method rests on.

Example-based versions live in test_masks.py, test_kspace.py, test_operators.py and
test_flow_core.py; these check the same contracts for *any* input hypothesis can find:
hard top-k, the sigmoid gate, the k-space and pixel operators, the centred FFT, the Euler
sampler and the rate ↔ budget conversions.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flowcs.errors import ConfigError
from flowcs.flow.sampler import euler
from flowcs.masks import (
    budget_to_rate,
    check_budget,
    random_mask,
    rate_to_budget,
    sample_budgets,
    select_topk,
    sigmoid_gate,
    topk_threshold,
)
from flowcs.operators import KSpaceLineOperator, PixelOperator
from flowcs.operators.fft import fft2c, ifft2c, to_complex, to_real

# database=None: no .hypothesis/ folder in the shared working tree; failures print their reproducing example
PROPS = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- strategies


@st.composite
def scores_and_acquired(draw, max_b: int = 4, max_n: int = 24, tie_heavy: bool | None = None,
                        distinct: bool = False):
    """(scores (B, N) float64, acquired bool (B, N), k) with k fitting the free locations of every row.

    Scores come from a handful of values (many ties), from any finite float, or (``distinct``) from
    distinct integers, so every row has a strict order with gaps of at least 1.
    """
    b = draw(st.integers(1, max_b))
    n = draw(st.integers(1, max_n))
    if distinct:
        row = st.lists(st.integers(-10**6, 10**6), min_size=n, max_size=n, unique=True)
    else:
        ties = draw(st.booleans()) if tie_heavy is None else tie_heavy
        values = st.sampled_from([-1.0, 0.0, 0.5, 2.0]) if ties else st.floats(-1e6, 1e6, allow_nan=False)
        row = st.lists(values, min_size=n, max_size=n)
    scores = torch.tensor(draw(st.lists(row, min_size=b, max_size=b)), dtype=torch.float64)
    acquired = torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=b,
                                          max_size=b)))
    free = int((~acquired).sum(1).min())
    k = draw(st.integers(0, free))
    return scores, acquired, k


def _seed():
    return st.integers(0, 2**31 - 1)


def _rand(*shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- hard top-k


@PROPS
@given(scores_and_acquired())
def test_topk_picks_exactly_k_new_locations_and_the_best_ones(data):
    scores, acquired, k = data
    new = select_topk(scores, k, acquired)
    assert new.dtype == torch.bool and new.shape == scores.shape
    assert (new.sum(1) == k).all()  # exactly k (a bool mask cannot repeat a location: they are distinct)
    assert not (new & acquired).any()  # never an already-acquired location
    for i in range(scores.shape[0]):
        rejected = ~acquired[i] & ~new[i]
        if new[i].any() and rejected.any():
            assert scores[i][new[i]].min() >= scores[i][rejected].max()  # no better free location left out


@PROPS
@given(scores_and_acquired(tie_heavy=True))
def test_topk_ties_are_broken_to_the_lower_index_deterministically(data):
    scores, acquired, k = data
    new = select_topk(scores, k, acquired)
    assert torch.equal(new, select_topk(scores.clone(), k, acquired.clone()))
    for i in range(scores.shape[0]):
        if not new[i].any():
            continue
        cut = scores[i][new[i]].min()
        tied = (scores[i] == cut) & ~acquired[i]
        # among the locations tied at the cut, the chosen ones are the lowest indices
        chosen = (tied & new[i]).nonzero().flatten().tolist()
        assert chosen == tied.nonzero().flatten().tolist()[: len(chosen)]


@PROPS
@given(scores_and_acquired(), st.data())
def test_topk_masks_are_nested_across_budgets(data, draw):
    scores, acquired, k = data
    k2 = draw.draw(st.integers(k, int((~acquired).sum(1).min())))
    assert not (select_topk(scores, k, acquired) & ~select_topk(scores, k2, acquired)).any()


@PROPS
@given(scores_and_acquired(), st.data())
def test_topk_rejects_any_nan(data, draw):
    scores, acquired, k = data
    i = draw.draw(st.integers(0, scores.shape[0] - 1))
    j = draw.draw(st.integers(0, scores.shape[1] - 1))
    scores[i, j] = math.nan
    with pytest.raises(ConfigError, match="NaN"):
        select_topk(scores, k, acquired)


@PROPS
@given(scores_and_acquired())
def test_topk_rejects_budgets_beyond_the_free_locations(data):
    scores, acquired, _ = data
    too_many = int(scores.shape[1] - acquired.sum(1).max()) + 1
    with pytest.raises(ConfigError, match="exceeds"):
        select_topk(scores, too_many, acquired)


def test_topk_never_returns_an_acquired_location_even_with_minus_inf_scores():
    scores = torch.tensor([[-math.inf, -math.inf, 1.0]])
    acquired = torch.tensor([[True, False, False]])
    new = select_topk(scores, 2, acquired)
    assert not (new & acquired).any() and int(new.sum()) == 2


@PROPS
@given(st.integers(1, 4), st.integers(1, 64), st.data(), _seed())
def test_random_masks_are_exact_and_avoid_acquired(b, n, draw, seed):
    acquired = torch.rand(b, n, generator=torch.Generator().manual_seed(seed)) < 0.3
    k = draw.draw(st.integers(0, int((~acquired).sum(1).min())))
    m = random_mask(b, n, k, acquired, torch.Generator().manual_seed(seed + 1))
    assert (m.sum(1) == k).all() and not (m & acquired).any()


# ----------------------------------------------------------------------------- threshold and gate


@PROPS
@given(scores_and_acquired(distinct=True))
def test_threshold_separates_the_top_k_from_the_rest(data):
    scores, acquired, k = data  # distinct scores: a strict cut exists
    assume(k >= 1)
    tau = topk_threshold(scores, k, acquired)[:, 0]
    above = ((scores > tau[:, None]) & ~acquired).sum(1)
    assert (above == k).all()


@PROPS
@given(scores_and_acquired(), st.floats(0.0, 1.0), st.floats(0.5, 60.0), st.sampled_from([0.5, 1.0, 2.0]))
def test_gate_is_bounded_and_forces_acquired_to_one(data, t, a, b):
    scores, acquired, k = data
    assume(k >= 1)
    g = sigmoid_gate(scores, k, torch.full((scores.shape[0],), t, dtype=scores.dtype), a, b, acquired)
    assert g.shape == scores.shape and torch.isfinite(g).all()
    assert ((g >= 0) & (g <= 1)).all()
    assert (g[acquired] == 1).all()


@PROPS
@given(scores_and_acquired(), st.floats(0.0, 1.0), st.floats(0.5, 60.0))
def test_gate_preserves_the_order_of_the_scores(data, t, a):
    scores, acquired, k = data
    assume(k >= 1)
    g = sigmoid_gate(scores, k, torch.full((scores.shape[0],), t, dtype=scores.dtype), a, 1.0, acquired)
    for i in range(scores.shape[0]):
        free = (~acquired[i]).nonzero().flatten()
        order = free[torch.argsort(scores[i][free], stable=True)]
        # higher score → gate value at least as high (up to 1 ulp: torch's vectorised and scalar sigmoid
        # paths may round the same input differently)
        assert (g[i][order].diff() >= -1e-12).all()


@PROPS
@given(scores_and_acquired(tie_heavy=False), st.data(), st.floats(0.05, 1.0), st.floats(0.5, 60.0))
def test_gate_is_monotone_when_one_score_rises(data, draw, t, a):
    scores, acquired, k = data
    assume(k >= 1)
    i = draw.draw(st.integers(0, scores.shape[0] - 1))
    free = (~acquired[i]).nonzero().flatten().tolist()
    j = draw.draw(st.sampled_from(free))
    delta = draw.draw(st.floats(1e-3, 1e3))
    tt = torch.full((scores.shape[0],), t, dtype=scores.dtype)
    before = sigmoid_gate(scores, k, tt, a, 1.0, acquired)[i, j]
    raised = scores.clone()
    raised[i, j] += delta
    after = sigmoid_gate(raised, k, tt, a, 1.0, acquired)[i, j]
    assert after >= before - 1e-12  # τ moves by at most δ/2, so s_j − τ still grows


@FEW
@given(scores_and_acquired(distinct=True))
def test_gate_tends_to_the_hard_mask(data):
    scores, acquired, k = data  # distinct integer scores: gaps of at least 1 around τ
    assume(k >= 1)
    hard = select_topk(scores, k, acquired) | acquired
    soft = sigmoid_gate(scores, k, torch.ones(scores.shape[0], dtype=scores.dtype), 100.0, 1.0, acquired)
    assert torch.allclose(soft, hard.to(soft.dtype), atol=1e-6)


# ----------------------------------------------------------------------------- operators and FFT


even_or_odd = st.integers(1, 13)


@PROPS
@given(h=even_or_odd, w=even_or_odd, b=st.integers(1, 3), seed=_seed(), alpha=st.floats(-3, 3),
       beta=st.floats(-3, 3), soft=st.booleans())
def test_kspace_operator_is_linear_in_the_image(h, w, b, seed, alpha, beta, soft):
    op = KSpaceLineOperator(h, w)
    x, y = _rand(b, 2, h, w, seed=seed), _rand(b, 2, h, w, seed=seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    mask = torch.rand(b, w, generator=g, dtype=torch.float64) if soft else torch.rand(b, w, generator=g) < 0.5
    lhs = op.measure(alpha * x + beta * y, mask)
    rhs = alpha * op.measure(x, mask) + beta * op.measure(y, mask)
    assert torch.allclose(lhs, rhs, atol=1e-10)
    lhs = op.adjoint(alpha * x + beta * y, mask)
    assert torch.allclose(lhs, alpha * op.adjoint(x, mask) + beta * op.adjoint(y, mask), atol=1e-10)


@PROPS
@given(h=even_or_odd, w=even_or_odd, b=st.integers(1, 3), seed=_seed())
def test_kspace_adjoint_dot_product_with_complex_inner_product(h, w, b, seed):
    """<A x, y> = <x, A^H y> for the complex inner product (real *and* imaginary parts), hard masks."""
    op = KSpaceLineOperator(h, w)
    x, y = _rand(b, 2, h, w, seed=seed), _rand(b, 2, h, w, seed=seed + 1)
    mask = torch.rand(b, w, generator=torch.Generator().manual_seed(seed + 2)) < 0.5
    lhs = torch.vdot(to_complex(op.measure(x, mask)).flatten(), to_complex(y).flatten())
    rhs = torch.vdot(to_complex(x).flatten(), to_complex(op.adjoint(y, mask)).flatten())
    assert torch.allclose(lhs, rhs, atol=1e-9, rtol=1e-9)


@PROPS
@given(h=even_or_odd, w=even_or_odd, seed=_seed())
def test_kspace_normal_operator_is_an_orthogonal_projection_for_hard_masks(h, w, seed):
    op = KSpaceLineOperator(h, w)
    x, y = _rand(2, 2, h, w, seed=seed), _rand(2, 2, h, w, seed=seed + 1)
    mask = torch.rand(2, w, generator=torch.Generator().manual_seed(seed + 2)) < 0.5
    px = op.normal(x, mask)
    assert torch.allclose(op.normal(px, mask), px, atol=1e-10)  # idempotent
    assert (px * y).sum().item() == pytest.approx((x * op.normal(y, mask)).sum().item(), abs=1e-9)  # self-adjoint
    assert (px * x).sum().item() >= -1e-12  # positive semi-definite
    full = torch.ones(2, w, dtype=torch.bool)
    assert torch.allclose(op.normal(x, full), x, atol=1e-10)  # the full mask is lossless


@PROPS
@given(shape=st.lists(st.integers(1, 11), min_size=2, max_size=4), seed=_seed())
def test_fft_helpers_are_unitary_and_each_others_adjoint(shape, seed):
    z = torch.complex(_rand(*shape, seed=seed), _rand(*shape, seed=seed + 1))
    w = torch.complex(_rand(*shape, seed=seed + 2), _rand(*shape, seed=seed + 3))
    k = fft2c(z)
    assert torch.linalg.vector_norm(k).item() == pytest.approx(torch.linalg.vector_norm(z).item(), rel=1e-10)
    assert torch.allclose(ifft2c(k), z, atol=1e-10) and torch.allclose(fft2c(ifft2c(z)), z, atol=1e-10)
    # <F z, w> = <z, F^H w> with F^H = ifft2c (per trailing 2-D image, summed)
    lhs = torch.vdot(k.flatten(), w.flatten())
    rhs = torch.vdot(z.flatten(), ifft2c(w).flatten())
    assert torch.allclose(lhs, rhs, atol=1e-9, rtol=1e-9)
    assert torch.equal(to_complex(to_real(z)), z)


@PROPS
@given(c=st.integers(1, 3), h=even_or_odd, w=even_or_odd, b=st.integers(1, 3), seed=_seed(), soft=st.booleans())
def test_pixel_operator_adjoint_and_projection(c, h, w, b, seed, soft):
    op = PixelOperator(c, h, w)
    x, y = _rand(b, c, h, w, seed=seed), _rand(b, c, h, w, seed=seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    mask = torch.rand(b, h * w, generator=g, dtype=torch.float64) if soft else torch.rand(b, h * w, generator=g) < 0.5
    lhs = (op.measure(x, mask) * y).sum().item()
    rhs = (x * op.adjoint(y, mask)).sum().item()
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)
    if not soft:
        once = op.zero_filled(op.measure(x, mask), mask)
        assert torch.equal(op.zero_filled(op.measure(once, mask), mask), once)
        unmeasured = ~mask.reshape(b, 1, h, w).expand(b, c, h, w)
        assert (once[unmeasured] == 0).all()  # one mask for every channel: unmeasured pixels are 0 in all


# ----------------------------------------------------------------------------- Euler sampler


@PROPS
@given(steps=st.integers(1, 64), b=st.integers(1, 4), d=st.integers(1, 8), seed=_seed())
def test_euler_is_exact_on_affine_in_t_fields(steps, b, d, seed):
    """v(x, t) = a + c·t: S Euler steps give the left Riemann sum x0 + a + c·(S − 1)/(2S), exactly."""
    x0, a, c = _rand(b, d, seed=seed), _rand(b, d, seed=seed + 1), _rand(b, d, seed=seed + 2)
    out = euler(lambda x, t: a + c * t[:, None], x0, steps=steps)
    assert torch.allclose(out, x0 + a + c * (steps - 1) / (2 * steps), atol=1e-12, rtol=1e-12)
    const = euler(lambda x, t: a, x0, steps=steps)
    assert torch.allclose(const, x0 + a, atol=1e-12)  # constant fields: exact solution


@PROPS
@given(steps=st.integers(1, 64), b=st.integers(1, 4), d=st.integers(1, 8), seed=_seed())
def test_euler_stays_on_the_straight_path_of_the_conditional_field(steps, b, d, seed):
    """v(x, t) = (x1 − x)/(1 − t) is affine in x; Euler visits x0 + t_i (x1 − x0) at every t_i and ends at x1."""
    x0, x1 = _rand(b, d, seed=seed), _rand(b, d, seed=seed + 1)
    visited = []

    def v(x, t):
        visited.append((x.clone(), t.clone()))
        return (x1 - x) / (1 - t[:, None])

    out = euler(v, x0, steps=steps)
    for x, t in visited:
        assert torch.allclose(x, x0 + t[:, None] * (x1 - x0), atol=1e-9)
    assert torch.allclose(out, x1, atol=1e-9)
    assert len(visited) == steps and visited[0][1].eq(0).all()


# ----------------------------------------------------------------------------- rates and budgets


@PROPS
@given(n=st.integers(1, 200_000), data=st.data())
def test_budget_rate_budget_round_trips(n, data):
    budget = data.draw(st.integers(1, n))
    rate = budget_to_rate(budget, n)
    assert 0 < rate <= 100
    assert rate_to_budget(rate, n) == budget


@PROPS
@given(n=st.integers(1, 200_000), rate=st.floats(1e-6, 100.0), rate2=st.floats(1e-6, 100.0))
def test_rate_budget_rate_is_within_half_a_location_and_monotone(n, rate, rate2):
    budget = rate_to_budget(rate, n)
    assert 1 <= budget <= n and check_budget(budget, n) == budget
    if rate / 100 * n >= 0.5:  # below half a location the budget is clamped to 1
        assert abs(budget_to_rate(budget, n) - rate) <= 50.0 / n + 1e-9
    lo, hi = sorted((rate, rate2))
    assert rate_to_budget(lo, n) <= rate_to_budget(hi, n)


@PROPS
@given(n=st.integers(1, 5000), lo=st.floats(0.01, 100.0), hi=st.floats(0.01, 100.0), seed=_seed(),
       b=st.integers(1, 16))
def test_sampled_budgets_stay_in_the_rate_range(n, lo, hi, seed, b):
    lo, hi = sorted((lo, hi))
    ks = sample_budgets(b, n, lo, hi, torch.Generator().manual_seed(seed))
    assert ks.dtype == torch.long and ks.shape == (b,)
    assert ((ks >= 1) & (ks <= n)).all()
    assert (ks >= min(rate_to_budget(lo, n), max(1, math.floor(lo / 100 * n)))).all()
    assert (ks <= max(1, math.ceil(hi / 100 * n))).all()


@PROPS
@given(st.one_of(st.floats(allow_nan=True).filter(lambda r: not 0 < r <= 100), st.just(math.nan)),
       st.integers(1, 1000))
def test_out_of_range_rates_are_config_errors(rate, n):
    with pytest.raises(ConfigError, match="out of range"):
        rate_to_budget(rate, n)
