import pytest
import torch

from flowcs.errors import ConfigError
from flowcs.flow.path import LinearPath, fm_loss
from flowcs.flow.sampler import euler
from flowcs.training.kendall import KendallWeighting


def test_euler_exact_on_constant_and_affine_in_t_fields():
    x0 = torch.randn(5, 7)
    v = torch.randn(5, 7)
    assert torch.allclose(euler(lambda x, t: v, x0, steps=3), x0 + v, atol=1e-6)
    # dx/dt = 2t·c: left Riemann sum with S steps gives (1 - 1/S)·c exactly
    c = torch.randn(5, 7)
    out = euler(lambda x, t: 2 * t[:, None] * c, x0, steps=10)
    assert torch.allclose(out, x0 + (1 - 1 / 10) * c, atol=1e-5)


def test_euler_follows_linear_path_velocity():
    path = LinearPath()
    x0, x1 = torch.randn(4, 9), torch.randn(4, 9)

    def v(x, t):  # the exact conditional field of the straight path through x1
        return (x1 - x) / (1 - t[:, None]).clamp_min(1e-6)

    assert torch.allclose(euler(v, x0, steps=20), x1, atol=1e-4)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    xt = path.interpolate(x0, x1, t)
    assert torch.allclose(xt[0], x0[0]) and torch.allclose(xt[3], x1[3])
    u = path.velocity(x0, x1)
    assert fm_loss(u, u).item() == 0.0
    assert fm_loss(u + 1, u).item() == pytest.approx(1.0)
    assert torch.allclose(path.one_step_estimate(xt, t, u), x1, atol=1e-6)


def test_euler_rejects_bad_steps():
    with pytest.raises(ConfigError, match="positive integer"):
        euler(lambda x, t: x, torch.zeros(1, 2), steps=0)


def test_kendall_weighting_formula_and_gradients():
    k = KendallWeighting(2)
    with torch.no_grad():
        k.log_vars.copy_(torch.tensor([0.0, 2.0]))
    l1, l2 = torch.tensor(3.0), torch.tensor(5.0)
    want = 0.5 * 3.0 + 0.5 * torch.exp(torch.tensor(-2.0)) * 5.0 + 0.5 * (0.0 + 2.0)
    total = k(l1, l2)
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    total.backward()
    # d/ds_i = -½ e^{-s_i} L_i + ½
    e2 = torch.exp(torch.tensor(-2.0)).item()
    assert k.log_vars.grad.tolist() == pytest.approx([-0.5 * 3.0 + 0.5, -0.5 * e2 * 5 + 0.5])
