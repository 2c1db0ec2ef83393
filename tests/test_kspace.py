"""k-space operator: centred orthonormal FFT helpers, line masks, adjoint, LF band, noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcs.errors import ConfigError
from flowcs.operators import KSpaceLineOperator, low_frequency_band
from flowcs.operators.fft import complex_abs, fft2c, ifft2c, to_complex, to_real


def _rand_complex(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                         torch.randn(*shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (2, 16, 11), (3, 1, 5, 6)])
def test_fft_helpers_are_unitary_and_mutually_inverse(shape):
    z = _rand_complex(*shape)
    k = fft2c(z)
    # unitary: norms and inner products are preserved
    assert torch.linalg.vector_norm(k).item() == pytest.approx(torch.linalg.vector_norm(z).item(), rel=1e-12)
    w = _rand_complex(*shape, seed=1)
    assert torch.vdot(fft2c(w).flatten(), k.flatten()).item() == pytest.approx(
        torch.vdot(w.flatten(), z.flatten()).item(), rel=1e-10)
    # inverse both ways
    assert torch.allclose(ifft2c(k), z, atol=1e-12)
    assert torch.allclose(fft2c(ifft2c(z)), z, atol=1e-12)


@pytest.mark.parametrize("n", [8, 9])
def test_fft_is_centred_like_numpy_reference(n):
    z = _rand_complex(n, n + 2)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(z.numpy()), norm="ortho"))
    assert np.allclose(fft2c(z).numpy(), ref, atol=1e-12)
    # a constant image puts all its energy at the DC sample, the centre (n // 2, m // 2)
    k = fft2c(torch.ones(n, n + 2, dtype=torch.complex128))
    assert k.abs().argmax().item() == (n // 2) * (n + 2) + (n + 2) // 2


def test_real_complex_round_trip_and_magnitude():
    z = _rand_complex(2, 5, 6)
    x = to_real(z)
    assert x.shape == (2, 2, 5, 6)
    assert torch.equal(to_complex(x), z)
    assert torch.allclose(complex_abs(x)[:, 0], z.abs())
    with pytest.raises(ValueError, match="2 channels"):
        to_complex(torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("h,w", [(8, 8), (9, 7), (6, 11), (5, 5)])
def test_operator_adjoint_identity_even_and_odd_sizes(h, w):
    op = KSpaceLineOperator(h, w)
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(3, 2, h, w, generator=g, dtype=torch.float64)
    y = torch.randn(3, 2, h, w, generator=g, dtype=torch.float64)
    for mask in (torch.rand(3, w, generator=g) < 0.4, torch.rand(3, w, generator=g, dtype=torch.float64)):
        lhs = (op.measure(x, mask) * y).sum()  # <Ax, y> (real inner product of the complex pairs)
        rhs = (x * op.adjoint(y, mask)).sum()  # <x, A^H y>
        assert lhs.item() == pytest.approx(rhs.item(), rel=1e-10, abs=1e-10)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), b=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_operator_adjoint_identity_random_shapes(h, w, b, seed):
    op = KSpaceLineOperator(h, w)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, h, w, generator=g, dtype=torch.float64)
    y = torch.randn(b, 2, h, w, generator=g, dtype=torch.float64)
    mask = torch.rand(b, w, generator=g, dtype=torch.float64)
    lhs = (op.measure(x, mask) * y).sum().item()
    rhs = (x * op.adjoint(y, mask)).sum().item()
    assert lhs == pytest.approx(rhs, rel=1e-9, abs=1e-9)


def test_measure_samples_only_the_masked_columns_and_full_mask_is_lossless():
    op = KSpaceLineOperator(6, 10)
    x = torch.randn(2, 2, 6, 10, dtype=torch.float64)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, [1, 5]] = True
    mask[1, 9] = True
    y = op.measure(x, mask)
    k = to_real(fft2c(to_complex(x)))
    assert torch.equal(y[0, :, :, [1, 5]], k[0, :, :, [1, 5]])
    assert y[0, :, :, [0, 2, 3, 4, 6, 7, 8, 9]].abs().max() == 0
    assert y[1, :, :, :9].abs().max() == 0
    full = torch.ones(2, 10, dtype=torch.bool)
    assert torch.allclose(op.zero_filled(op.measure(x, full), full), x, atol=1e-12)
    # normal operator = A^H A, and mask_to_image is constant down each column
    assert torch.allclose(op.normal(x, mask), op.adjoint(op.measure(x, mask), mask))
    mi = op.mask_to_image(mask)
    assert mi.shape == (2, 1, 6, 10) and torch.equal(mi[:, 0, 3], mask)


def test_operator_shape_errors_are_one_line():
    op = KSpaceLineOperator(8, 8)
    with pytest.raises(ConfigError, match=r"expected images of shape \(batch, 2, 8, 8\)"):
        op.measure(torch.zeros(1, 1, 8, 8), torch.ones(1, 8, dtype=torch.bool))
    with pytest.raises(ConfigError, match="expected a mask of shape"):
        op.measure(torch.zeros(1, 2, 8, 8), torch.ones(1, 7, dtype=torch.bool))


@pytest.mark.parametrize("width,fraction,n", [(128, 0.08, 10), (208, 0.04, 8), (127, 0.08, 10), (9, 0.34, 3),
                                              (10, 0.25, 2), (11, 0.5, 6), (368, 0.08, 29), (5, 0.01, 1)])
def test_low_frequency_band_is_centred_with_the_right_width(width, fraction, n):
    band = low_frequency_band(width, fraction)
    idx = band.nonzero().flatten()
    assert band.dtype == torch.bool and band.shape == (width,)
    assert int(band.sum()) == n == max(1, round(fraction * width))
    assert torch.equal(idx, torch.arange(idx[0], idx[0] + n))  # contiguous
    assert band[width // 2]  # holds the DC column of the centred FFT
    left, right = int(idx[0]), width - 1 - int(idx[-1])
    assert abs(left - right) <= 1  # centred (exactly when width - n is even)
    if (width - n) % 2 == 0:
        assert left == right


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_low_frequency_band_rejects_bad_fractions(fraction):
    with pytest.raises(ConfigError, match="must be in"):
        low_frequency_band(16, fraction)


def test_noise_is_channel_specific_and_reproducible():
    op = KSpaceLineOperator(32, 32, noise_pct=10.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 32, 32, generator=g)
    x[:, 1] *= 5  # imaginary channel much larger → larger noise there
    mask = torch.ones(2, 32, dtype=torch.bool)
    clean = op.measure(x, mask)
    noisy = op.measure(x, mask, noisy=True, generator=torch.Generator().manual_seed(1))
    again = op.measure(x, mask, noisy=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)
    assert torch.equal(op.measure(x, mask, noisy=False), clean)
    noise = noisy - clean
    for b in range(2):
        for c in range(2):
            expected = 0.10 * clean[b, c].std()
            assert noise[b, c].std().item() == pytest.approx(expected.item(), rel=0.1)
    # unsampled columns stay exactly zero
    half = torch.zeros(2, 32, dtype=torch.bool)
    half[:, :16] = True
    y = op.measure(x, half, noisy=True, generator=torch.Generator().manual_seed(1))
    assert y[..., 16:].abs().max() == 0
