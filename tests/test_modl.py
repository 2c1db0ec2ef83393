"""MoDL: conjugate gradient, data consistency, the MRI task (loss / SSIM), MRI flow velocity net, Cartesian policies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from flowcs.errors import ConfigError
from flowcs.flow.nets.mlp import MRIVelocityMLP, pool_features
from flowcs.metrics import ssim
from flowcs.operators import KSpaceLineOperator
from flowcs.operators.fft import complex_abs
from flowcs.policies.cartesian import EquispacedPolicy, LowFrequencyPolicy, VariableDensityPolicy, variable_density
from flowcs.tasks.modl import MoDL, MRIReconstructionTask, column_mask, conjugate_gradient, mri_loss, normal_op


def test_cg_solves_a_known_spd_system():
    g = torch.Generator().manual_seed(0)
    n = 6
    q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    a = q @ torch.diag(torch.tensor([1.0, 1.5, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)) @ q.T
    x_true = torch.randn(2, n, generator=g, dtype=torch.float64)
    b = x_true @ a.T
    x = conjugate_gradient(lambda v: v @ a.T, b, iters=n)  # exact in n steps for an n×n SPD matrix
    assert torch.allclose(x, x_true, atol=1e-9)
    # warm start from the solution stays there
    assert torch.allclose(conjugate_gradient(lambda v: v @ a.T, b, x0=x_true, iters=3), x_true, atol=1e-10)
    # fewer iterations: still a descent towards the solution
    x2 = conjugate_gradient(lambda v: v @ a.T, b, iters=2)
    assert (x2 - x_true).norm() < x_true.norm()
    with pytest.raises(ConfigError, match="at least 1 iteration"):
        conjugate_gradient(lambda v: v, b, iters=0)


def test_cg_solves_the_modl_normal_equations_and_is_differentiable():
    g = torch.Generator().manual_seed(1)
    h, w, lam = 8, 10, 0.05
    mask = (torch.rand(2, w, generator=g) < 0.5).double()
    x_true = torch.randn(2, 2, h, w, generator=g, dtype=torch.float64)

    def apply_a(v):
        return normal_op(v, mask) + lam * v

    b = apply_a(x_true).requires_grad_(True)
    x = conjugate_gradient(apply_a, b, iters=30)
    assert torch.allclose(x, x_true, atol=1e-8)
    x.sum().backward()
    assert b.grad is not None and torch.isfinite(b.grad).all()


def test_normal_op_matches_the_operator_for_hard_and_soft_masks():
    op = KSpaceLineOperator(6, 9)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 6, 9, generator=g, dtype=torch.float64)
    hard = torch.rand(3, 9, generator=g) < 0.5
    assert torch.allclose(normal_op(x, hard), op.normal(x, hard), atol=1e-12)
    soft = torch.rand(3, 9, generator=g, dtype=torch.float64)
    assert torch.allclose(normal_op(x, soft), op.normal(x, soft), atol=1e-12)  # Fᴴ diag(m²) F
    assert torch.equal(column_mask(op.mask_to_image(soft)), soft)


def test_modl_with_full_mask_and_vanishing_lambda_returns_the_input():
    torch.manual_seed(0)
    net = MoDL(unrolls=3, cg_iters=8).double().eval()
    with torch.no_grad():
        net.log_lam.fill_(math.log(1e-9))
    x = torch.randn(2, 2, 12, 10, dtype=torch.float64)
    full = torch.ones(2, 10, dtype=torch.float64)
    with torch.no_grad():
        out = net(x, full)
    assert torch.allclose(out, x, atol=1e-6)
    # with a large λ the denoiser output dominates instead, so the identity above is not trivial
    with torch.no_grad():
        net.log_lam.fill_(math.log(1e6))
        far = net(x, full)
    assert (far - x).abs().max() > 1e-3


def test_modl_data_consistency_keeps_measured_lines_when_lambda_is_small():
    torch.manual_seed(1)
    net = MoDL(unrolls=2, cg_iters=8).double().eval()
    with torch.no_grad():
        net.log_lam.fill_(math.log(1e-8))
    op = KSpaceLineOperator(8, 12)
    x = torch.randn(1, 2, 8, 12, dtype=torch.float64)
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[0, [2, 5, 6, 7, 10]] = True
    y = op.measure(x, mask)
    with torch.no_grad():
        out = net(op.zero_filled(y, mask), mask.double())
    assert torch.allclose(op.measure(out, mask), y, atol=1e-5)


def test_modl_shapes_lambda_and_errors():
    net = MoDL(unrolls=1)
    assert net.lam.item() == pytest.approx(0.05)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 4
    out = net(torch.randn(2, 2, 16, 16), torch.ones(2, 16))
    assert out.shape == (2, 2, 16, 16)
    with pytest.raises(ConfigError, match=r"\(batch, 2, H, W\)"):
        net(torch.randn(2, 1, 16, 16), torch.ones(2, 16))
    with pytest.raises(ConfigError, match="column mask"):
        net(torch.randn(2, 2, 16, 16), torch.ones(2, 15))
    with pytest.raises(ConfigError, match="at least 1 unroll"):
        MoDL(unrolls=0)


def test_mri_task_uses_flowcs_ssim_and_matches_skimage_on_fixed_arrays():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(2, 2, 20, 24))
    pred = target + 0.2 * rng.normal(size=target.shape)
    t, p = torch.from_numpy(target), torch.from_numpy(pred)
    task = MRIReconstructionTask(MoDL(unrolls=1))
    score = task.score(p, t)
    assert torch.allclose(score, ssim(complex_abs(p), complex_abs(t)))
    for i in range(2):
        mt, mp = np.abs(target[i, 0] + 1j * target[i, 1]), np.abs(pred[i, 0] + 1j * pred[i, 1])
        ref = structural_similarity(mt, mp, data_range=mt.max(), win_size=7)
        assert score[i].item() == pytest.approx(ref, abs=1e-10)
    m = task.metrics(p, t)
    assert set(m) == {"ssim", "psnr", "nmse"} and torch.allclose(m["ssim"], score)


def test_mri_loss_is_l1_plus_one_minus_ssim_and_reaches_zero():
    x = torch.randn(3, 2, 16, 16, dtype=torch.float64)
    assert torch.allclose(mri_loss(x, x), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    y = x + 0.1
    expected = (y - x).abs().flatten(1).mean(1) + (1 - ssim(complex_abs(y), complex_abs(x)))
    assert torch.allclose(mri_loss(y, x), expected)
    task = MRIReconstructionTask(MoDL(unrolls=1), ssim_weight=1.0)
    assert task.loss(y, x).shape == () and task.loss(y, x, reduction="none").shape == (3,)


def test_frozen_modl_passes_gradients_to_a_soft_mask():
    torch.manual_seed(0)
    task = MRIReconstructionTask(MoDL(unrolls=2)).freeze()
    op = KSpaceLineOperator(16, 16)
    x = torch.randn(2, 2, 16, 16)
    m = torch.full((2, 16), 0.3, requires_grad=True)
    pred = task.predict(op.zero_filled(op.measure(x, m), m), op.mask_to_image(m))
    task.loss(pred, x).backward()
    assert m.grad is not None and m.grad.abs().sum() > 0
    assert all(p.grad is None for p in task.model.parameters())


def test_mri_velocity_mlp_shapes_zero_start_and_sample_sharing():
    net = MRIVelocityMLP(n_locations=20, feature_dim=5 + 7, hidden=32, layers=4, time_dim=64)
    feats = [torch.randn(2, 5, 8, 8), torch.randn(2, 7, 4, 4)]
    assert pool_features(feats).shape == (2, 12)
    x_t, t = torch.randn(6, 20), torch.rand(6)
    v = net(x_t, t, feats)  # 3 samples per condition, rows grouped per condition
    assert v.shape == (6, 20) and v.abs().max() == 0  # zero-initialised output layer
    linears = [m for m in net.body if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 and linears[0].in_features == 20 + 12 + 64 and linears[-1].out_features == 32
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in net.body) == 4
    with pytest.raises(ValueError, match="pooled feature channels"):
        net(x_t[:2], t[:2], [torch.randn(2, 3, 4, 4)])


@pytest.mark.parametrize("policy_cls", [EquispacedPolicy, VariableDensityPolicy, LowFrequencyPolicy])
@pytest.mark.parametrize("budget", [0, 1, 7, 22])
def test_cartesian_policies_add_exactly_budget_lines_outside_the_lf_band(policy_cls, budget):
    from flowcs.operators import low_frequency_band

    n = 128
    lf = low_frequency_band(n, 0.08).expand(3, n)
    pol = policy_cls(n)
    cond = torch.zeros(3, 1, 4, 4)
    for gen in (None, torch.Generator().manual_seed(0)):
        mask = pol.propose(cond, budget, lf, gen)
        assert torch.equal(mask & lf, lf)
        assert ((mask & ~lf).sum(1) == budget).all()
    det = pol.propose(cond, budget, lf)
    assert torch.equal(det, pol.propose(cond, budget, lf))


def test_equispaced_spacing_and_variable_density_prefers_the_centre():
    from flowcs.operators import low_frequency_band

    n = 128
    lf = low_frequency_band(n, 0.08)[None]
    mask = EquispacedPolicy(n).propose(torch.zeros(1, 1, 2, 2), 22, lf)
    free_pos = torch.cumsum(~lf[0], 0)[mask[0] & ~lf[0]]  # ranks among the free columns
    gaps = free_pos.diff()
    assert gaps.min() >= 5 and gaps.max() <= 6  # 118 free columns / 22 ≈ 5.4
    d = variable_density(n, power=3.0)
    assert d.argmax() == n // 2 and d.sum().item() == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    masks = VariableDensityPolicy(n).propose(torch.zeros(200, 1, 2, 2), 22, lf.expand(200, n), g)
    freq = masks.float().mean(0)
    centre = freq[n // 2 - 20:n // 2 + 20][~lf[0, n // 2 - 20:n // 2 + 20]].mean()
    edge = torch.cat([freq[:20], freq[-20:]]).mean()
    assert centre > 3 * edge


def test_low_frequency_policy_widens_the_centre_band():
    from flowcs.operators import low_frequency_band

    n = 128
    lf = low_frequency_band(n, 0.08)[None]
    mask = LowFrequencyPolicy(n).propose(torch.zeros(1, 1, 2, 2), 22, lf)[0]
    idx = mask.nonzero().flatten()
    assert idx.numel() == 32 and torch.equal(idx, torch.arange(idx[0], idx[0] + 32)) and mask[n // 2]
    assert torch.equal(mask, low_frequency_band(n, 0.25))  # the same block as a 25 % band
