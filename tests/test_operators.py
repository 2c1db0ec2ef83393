import pytest
import torch

from flowcs.errors import ConfigError
from flowcs.operators import PixelOperator


def test_pixel_operator_zero_filled_is_masking_shared_across_channels():
    op = PixelOperator(3, 4, 5)
    x = torch.rand(2, 3, 4, 5)
    mask = torch.rand(2, 20) < 0.3
    y = op.measure(x, mask)
    m = mask.reshape(2, 1, 4, 5)
    assert torch.equal(y, x * m)
    assert torch.equal(op.zero_filled(y, mask), x * m)
    # the same mask on every channel
    for c in range(3):
        assert torch.equal(y[:, c][~m[:, 0]], torch.zeros_like(y[:, c][~m[:, 0]]))
    assert op.n_locations == 20


def test_pixel_operator_adjoint_dot_product():
    op = PixelOperator(2, 6, 7)
    x, yv = torch.randn(3, 2, 6, 7, dtype=torch.float64), torch.randn(3, 2, 6, 7, dtype=torch.float64)
    mask = torch.rand(3, 42, dtype=torch.float64)  # soft masks too
    lhs = (op.measure(x, mask) * yv).sum()
    rhs = (x * op.adjoint(yv, mask)).sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-12)


def test_pixel_operator_shape_errors_are_clear():
    op = PixelOperator(1, 28, 28)
    with pytest.raises(ConfigError, match=r"expected images of shape \(batch, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        op.measure(torch.zeros(2, 1, 32, 32), torch.zeros(2, 784, dtype=torch.bool))
    with pytest.raises(ConfigError, match="expected a mask of shape"):
        op.measure(torch.zeros(2, 1, 28, 28), torch.zeros(2, 100, dtype=torch.bool))
