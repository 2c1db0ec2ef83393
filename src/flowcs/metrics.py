"""Per-image evaluation metrics (batched, torch) and a small summary helper.

Every image metric takes ``pred`` and ``target`` of identical shape ``(B, ...)``
and returns a float64 tensor of shape ``(B,)`` -- one value per image -- so
callers can report mean +- std, a confidence interval and the count via
:func:`summarize`.  Computation is done in float64 on the inputs' device;
the functions are plain torch ops (differentiable, no ``no_grad``).

Conventions (fastMRI evaluation):

* ``ssim`` matches ``skimage.metrics.structural_similarity`` with its defaults
  (7x7 uniform window, K1=0.01, K2=0.03, sample covariance ``N/(N-1)``, mean
  over the *valid* region, i.e. ``(win_size-1)//2`` pixels cropped from every
  border).  ``C > 1`` channels are averaged like skimage's ``channel_axis``.
* ``data_range=None`` means the per-image maximum of the *target*
  (fastMRI uses ``gt.max()``).  fastMRI takes that maximum over a whole volume;
  to reproduce it exactly pass the per-volume maximum as a ``(B,)`` tensor.
  For images known to lie in ``[0, 1]`` pass ``data_range=1.0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from flowcs.errors import ConfigError, DataError

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "accuracy",
    "mae",
    "nmse",
    "psnr",
    "ssim",
    "summarize",
]


# ---------------------------------------------------------------------------
# input checking helpers
# ---------------------------------------------------------------------------


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _as_tensor(name: str, what: str, x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"metric {name}: {what} is not array-like ({type(x).__name__})") from exc
    if x.is_complex():
        raise ConfigError(f"metric {name}: {what} is complex; pass magnitudes (e.g. x.abs())")
    return x


def _check_pair(name: str, pred: Any, target: Any, min_ndim: int = 2) -> tuple[Tensor, Tensor]:
    """Validate and convert an image pair to float64 tensors of identical shape."""
    pred = _as_tensor(name, "prediction", pred)
    target = _as_tensor(name, "target", target)
    if pred.shape != target.shape:
        raise ConfigError(
            f"metric {name}: prediction shape {_shape(pred)} differs from target shape {_shape(target)}"
        )
    if pred.ndim < min_ndim:
        raise ConfigError(
            f"metric {name}: expected a batch of shape (B, ...) with at least {min_ndim} dims, "
            f"got shape {_shape(pred)}"
        )
    if pred.device != target.device:
        raise ConfigError(f"metric {name}: prediction is on {pred.device} but target is on {target.device}")
    if pred.shape[0] == 0:
        raise ConfigError(f"metric {name}: empty batch (shape {_shape(pred)})")
    return pred.to(torch.float64), target.to(torch.float64)


def _data_range(name: str, data_range: Any, target: Tensor) -> Tensor:
    """Per-image data range as a float64 ``(B,)`` tensor (target max when ``None``)."""
    b = target.shape[0]
    if data_range is None:
        r = target.reshape(b, -1).amax(dim=1)
        bad = ~(torch.isfinite(r) & (r > 0))
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise DataError(
                f"metric {name}: target image {i} has maximum {float(r[i])!r}, so the default "
                "data_range (per-image target max) is not positive; pass data_range explicitly"
            )
        return r
    r = torch.as_tensor(data_range, dtype=torch.float64, device=target.device)
    if r.ndim == 0:
        r = r.expand(b)
    elif _shape(r) != (b,):
        raise ConfigError(
            f"metric {name}: data_range must be a scalar or have shape ({b},), got shape {_shape(r)}"
        )
    if not bool((torch.isfinite(r) & (r > 0)).all()):
        raise ConfigError(f"metric {name}: data_range must be finite and > 0, got {r.tolist()}")
    return r


# ---------------------------------------------------------------------------
# image metrics
# ---------------------------------------------------------------------------


def ssim(
    pred: Tensor,
    target: Tensor,
    data_range: float | Tensor | None = None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity per image, fastMRI / scikit-image convention.

    Args:
        pred, target: ``(B, H, W)`` or ``(B, C, H, W)`` real images of identical shape.
        data_range: scalar or ``(B,)``; ``None`` -> per-image ``target.max()``.
        win_size: odd side of the square uniform window (default 7).
        k1, k2: stability constants (``C1=(k1*R)^2``, ``C2=(k2*R)^2``).

    Returns:
        float64 ``(B,)``: mean SSIM over the valid region (and over channels).

    Equal to ``structural_similarity(target[i], pred[i], data_range=...,
    channel_axis=0 if C > 1)`` for float64 inputs.
    """
    x, y = _check_pair("ssim", pred, target, min_ndim=3)
    if x.ndim == 3:
        x, y = x.unsqueeze(1), y.unsqueeze(1)
    elif x.ndim != 4:
        raise ConfigError(
            f"metric ssim: expected images of shape (B, H, W) or (B, C, H, W), got shape {_shape(x)}"
        )
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise ConfigError(f"metric ssim: win_size must be an odd integer >= 3, got {win_size!r}")
    if not (k1 >= 0 and k2 >= 0):
        raise ConfigError(f"metric ssim: k1 and k2 must be >= 0, got k1={k1!r}, k2={k2!r}")
    b, c, h, w = x.shape
    if h < win_size or w < win_size:
        raise ConfigError(
            f"metric ssim: image size ({h}, {w}) is smaller than the {win_size}x{win_size} window; "
            "use larger images or a smaller odd win_size"
        )
    r = _data_range("ssim", data_range, y).view(b, 1, 1, 1)

    # One pooling call over the five moment maps.  avg_pool2d with stride 1 and no
    # padding yields exactly skimage's uniform_filter output after its border crop.
    stack = torch.stack([x, y, x * x, y * y, x * y], dim=2).reshape(b * c, 5, h, w)
    mom = F.avg_pool2d(stack, kernel_size=win_size, stride=1).reshape(b, c, 5, h - win_size + 1, -1)
    ux, uy, uxx, uyy, uxy = mom.unbind(dim=2)

    n = win_size * win_size
    cov_norm = n / (n - 1)  # sample covariance, as skimage's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (k1 * r) ** 2
    c2 = (k2 * r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    # Mean over (H', W') per channel then over channels == mean over (C, H', W').
    return s.mean(dim=(1, 2, 3))


def _mse(x: Tensor, y: Tensor) -> Tensor:
    return (x - y).pow(2).reshape(x.shape[0], -1).mean(dim=1)


def psnr(pred: Tensor, target: Tensor, data_range: float | Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB per image: ``10 * log10(R^2 / MSE)``.

    ``data_range`` (``R``) is a scalar or ``(B,)``; ``None`` -> per-image ``target.max()``.
    The MSE is over all non-batch dims.  An image with ``MSE == 0`` (identical to
    its target) gets ``+inf`` -- filter it (``torch.isfinite``) before averaging if
    needed.  Returns float64 ``(B,)``.
    """
    x, y = _check_pair("psnr", pred, target)
    r = _data_range("psnr", data_range, y)
    return 10.0 * torch.log10(r * r / _mse(x, y))


def nmse(pred: Tensor, target: Tensor) -> Tensor:
    """Normalised MSE per image: ``||pred - target||^2 / ||target||^2`` (float64 ``(B,)``).

    An all-zero target gives ``inf`` (or ``nan`` when the prediction is also zero).
    """
    x, y = _check_pair("nmse", pred, target)
    num = (x - y).pow(2).reshape(x.shape[0], -1).sum(dim=1)
    den = y.pow(2).reshape(y.shape[0], -1).sum(dim=1)
    return num / den


def mae(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all non-batch dims, per image (float64 ``(B,)``)."""
    x, y = _check_pair("mae", pred, target)
    return (x - y).abs().reshape(x.shape[0], -1).mean(dim=1)


def _labels(what: str, t: Tensor) -> Tensor:
    if t.dtype == torch.bool or not (t.is_floating_point()):
        return t.long()
    if not bool((t == t.round()).all()):
        raise ConfigError(
            f"metric accuracy: {what} of shape {_shape(t)} is floating-point but not integer-valued; "
            "pass class labels, or logits with a trailing class dimension"
        )
    return t.long()


def accuracy(logits_or_labels: Tensor, target: Tensor) -> Tensor:
    """Per-sample correctness as float64 0/1 values of shape ``(B,)``.

    ``target`` holds integer class labels of shape ``(B,)``.  ``logits_or_labels``
    is either logits/scores of shape ``(B, K)`` (the prediction is the argmax over
    the last dim) or predicted labels of shape ``(B,)``.  More generally, for a
    target of shape ``(B, ...)`` the value is the fraction correct per sample.
    """
    p = _as_tensor("accuracy", "prediction", logits_or_labels)
    t = _as_tensor("accuracy", "target", target)
    if t.ndim == 0 or t.shape[0] == 0:
        raise ConfigError(f"metric accuracy: target must have shape (B, ...) with B > 0, got {_shape(t)}")
    if p.ndim == t.ndim + 1 and p.shape[:-1] == t.shape:
        if p.shape[-1] == 0:
            raise ConfigError(f"metric accuracy: logits of shape {_shape(p)} have no classes")
        pl = p.argmax(dim=-1)
    elif p.shape == t.shape:
        pl = _labels("prediction", p)
    else:
        raise ConfigError(
            f"metric accuracy: prediction shape {_shape(p)} differs from target shape {_shape(t)} "
            f"(expected {_shape(t)} labels or {_shape(t) + ('K',)} logits)"
        )
    if pl.device != t.device:
        raise ConfigError(f"metric accuracy: prediction is on {pl.device} but target is on {t.device}")
    correct = (pl == _labels("target", t)).to(torch.float64)
    return correct.reshape(correct.shape[0], -1).mean(dim=1)


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------


def summarize(values: Tensor | np.ndarray | Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict:
    """Summary statistics of per-image values.

    Returns ``{"mean", "std", "n", "ci95"}`` where ``std`` is the *population*
    standard deviation (ddof=0) and ``ci95 = (lo, hi)`` is a percentile-bootstrap
    95% interval of the mean (``n_boot`` resamples, ``numpy`` generator seeded with
    ``seed`` -> deterministic).  For ``n < 2`` the interval is ``(mean, mean)``.
    Non-finite values (e.g. a ``+inf`` PSNR) propagate into the statistics.
    """
    if isinstance(values, Tensor):
        arr = values.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(values, dtype=np.float64)
    arr = arr.reshape(-1)
    n = int(arr.size)
    if n == 0:
        raise ConfigError("summarize: no values to summarize")
    if n_boot < 1:
        raise ConfigError(f"summarize: n_boot must be >= 1, got {n_boot}")
    mean = float(arr.mean())
    std = float(arr.std(ddof=0))
    if n < 2:
        return {"mean": mean, "std": std, "n": n, "ci95": (mean, mean)}
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 4_000_000 // n))  # bound the index matrix's memory
    boots = []
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        boots.append(arr[idx].mean(axis=1))
    lo, hi = np.percentile(np.concatenate(boots), [2.5, 97.5])
    return {"mean": mean, "std": std, "n": n, "ci95": (float(lo), float(hi))}


METRICS: dict[str, Callable[..., Tensor]] = {
    "ssim": ssim,
    "psnr": psnr,
    "nmse": nmse,
    "mae": mae,
    "accuracy": accuracy,
}

HIGHER_IS_BETTER: dict[str, bool] = {
    "ssim": True,
    "psnr": True,
    "nmse": False,
    "mae": False,
    "accuracy": True,
}
