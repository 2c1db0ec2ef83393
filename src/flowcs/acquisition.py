"""What has been measured so far, and what a policy is shown of it.

Every experiment acquires in the same order: a cheap **first measurement** (:class:`RandomFirst` pixels,
or a fixed :class:`BandFirst` such as the MRI low-frequency lines), then a policy chooses where to measure
next from a **condition** built out of what was measured (:class:`UNetInput`: the zero-filled image and its
mask for pixel tasks; :class:`Magnitude`: the zero-filled magnitude for k-space). :class:`Acquisition`
holds one batch of samples while that happens: their full measurement (with its noise drawn **once**, so
every policy and every round of a sequential policy sees the same data), the locations acquired so far,
``observe(mask)`` (what those locations show) and ``condition()`` (the policy input for everything acquired
so far). A sequential (multi-round) policy is called again with ``acquisition.condition(acquired)`` after
each round; nothing else has to know how the condition is made.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from .masks import random_mask
from .operators.base import Operator
from .operators.fft import complex_abs
from .tasks.unet import network_input

__all__ = ["FirstMeasurement", "RandomFirst", "BandFirst", "NoFirst", "Condition", "UNetInput", "Magnitude",
           "Acquisition", "full_measurement", "observer"]


# ----------------------------------------------------------------------------- first measurement


class FirstMeasurement(ABC):
    """The locations measured before any policy runs; they count as acquired for every later choice."""

    #: number of locations it measures (reported beside every budget)
    count: int = 0

    @abstractmethod
    def acquired(self, batch: int, n_locations: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        """Bool (B, N) mask of the first locations."""

    @abstractmethod
    def describe(self) -> str:
        """One sentence for the results files."""


class RandomFirst(FirstMeasurement):
    """``k0`` uniformly random locations per sample (``random-first``, SPEC §1)."""

    def __init__(self, k0: int):
        self.count = int(k0)

    def acquired(self, batch, n_locations, generator=None, device="cpu"):
        return random_mask(batch, n_locations, self.count, None, generator, device)

    def describe(self) -> str:
        return f"random-first: {self.count} uniformly random locations measured first"


class BandFirst(FirstMeasurement):
    """A fixed set of locations for every sample (``lowfreq-first``: the central k-space lines)."""

    def __init__(self, band: torch.Tensor, what: str = "low-frequency band"):
        self.band = band.bool().flatten()
        self.count = int(self.band.sum())
        self.what = what

    def acquired(self, batch, n_locations, generator=None, device="cpu"):
        return self.band.to(device).expand(batch, -1).clone()

    def describe(self) -> str:
        return f"lowfreq-first: the {self.count}-location {self.what} is acquired first"


class NoFirst(FirstMeasurement):
    """Nothing measured first (the paper's ``random`` row on pixel tasks)."""

    def acquired(self, batch, n_locations, generator=None, device="cpu"):
        return torch.zeros(batch, n_locations, dtype=torch.bool, device=device)

    def describe(self) -> str:
        return "no first measurement"


# ----------------------------------------------------------------------------- condition


class Condition(ABC):
    """Builds a policy's input from the zero-filled image of what was acquired and the acquired mask."""

    @abstractmethod
    def __call__(self, operator: Operator, zero_filled: torch.Tensor, acquired: torch.Tensor) -> torch.Tensor: ...


class UNetInput(Condition):
    """Zero-filled image + mask channel: the input of the reconstruction U-Net whose encoder reads it."""

    def __call__(self, operator, zero_filled, acquired):
        return network_input(zero_filled, operator.mask_to_image(acquired))


class Magnitude(Condition):
    """Magnitude of a complex (two-channel) zero-filled image, (B, 1, H, W); average-pooled by ``pool`` (the
    low-frequency condition carries no more detail than a small image, so it can be encoded at that size)."""

    def __init__(self, pool: int = 1):
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.pool = int(pool)

    def __call__(self, operator, zero_filled, acquired):
        mag = complex_abs(zero_filled)
        return mag if self.pool == 1 else torch.nn.functional.avg_pool2d(mag, self.pool, ceil_mode=True)


# ----------------------------------------------------------------------------- measuring


def full_measurement(operator: Operator, x: torch.Tensor, noisy: bool = False,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The measurement with every location sampled (noisy when asked and the operator has noise)."""
    ones = torch.ones(x.shape[0], operator.n_locations, dtype=torch.bool, device=x.device)
    if noisy:
        return operator.measure(x, ones, noisy=True, generator=generator)
    return operator.measure(x, ones)


def observer(operator: Operator, y_full: torch.Tensor, linear: bool = True):
    """``observe(mask) -> zero-filled image`` of the samples whose full measurement is ``y_full``.

    Equal to ``zero_filled(measure(x, mask), mask)`` for hard masks (a masking operator's measurement with a
    mask is the full measurement times the mask). Soft masks: ``linear`` applies the mask once
    (A_1ᴴ (m ⊙ y)); otherwise the operator's own convention (m², see :mod:`flowcs.policies.training`).
    """
    ones = torch.ones(y_full.shape[0], operator.n_locations, dtype=torch.bool, device=y_full.device)

    def observe(mask: torch.Tensor) -> torch.Tensor:
        m = operator.mask_to_image(mask).to(y_full.dtype)
        if not linear:
            return operator.zero_filled(m * y_full, mask)
        return operator.adjoint(m * y_full, ones[:mask.shape[0]])

    return observe


@dataclass
class Acquisition:
    """One batch of samples being measured: full measurement (noise drawn once) and what is acquired so far."""

    operator: Operator
    y_full: torch.Tensor
    acquired: torch.Tensor  # bool (B, N)
    condition_fn: Condition

    @classmethod
    def start(cls, operator: Operator, x: torch.Tensor, first: FirstMeasurement, condition: Condition,
              first_generator: torch.Generator | None = None, noisy: bool = False,
              noise_generator: torch.Generator | None = None) -> Acquisition:
        """Measure ``x`` fully (noise drawn once) and acquire the first measurement."""
        acquired = first.acquired(x.shape[0], operator.n_locations, first_generator, x.device)
        y_full = full_measurement(operator, x, noisy, noise_generator)
        return cls(operator, y_full, acquired, condition)

    def observe(self, mask: torch.Tensor) -> torch.Tensor:
        """Zero-filled image of the samples measured at ``mask`` (B, C, H, W)."""
        return observer(self.operator, self.y_full)(mask)

    def condition(self, acquired: torch.Tensor | None = None) -> torch.Tensor:
        """The policy input for ``acquired`` (default: what is acquired now)."""
        acquired = self.acquired if acquired is None else acquired
        return self.condition_fn(self.operator, self.observe(acquired), acquired)

    def rows(self, n: int) -> Acquisition:
        """The first ``n`` samples (a policy evaluated on a subset, e.g. ADS)."""
        return Acquisition(self.operator, self.y_full[:n], self.acquired[:n], self.condition_fn)
