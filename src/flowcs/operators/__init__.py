"""Measurement operators: one interface (``measure`` / ``adjoint`` / ``zero_filled``) for every geometry."""

from .base import Operator
from .kspace import KSpaceLineOperator, low_frequency_band
from .pixel import PixelOperator

__all__ = ["Operator", "PixelOperator", "KSpaceLineOperator", "low_frequency_band"]
