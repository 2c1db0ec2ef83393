"""Measurement operators: one interface (``measure`` / ``adjoint`` / ``zero_filled``) for every geometry."""

from .base import Operator
from .pixel import PixelOperator

__all__ = ["Operator", "PixelOperator"]
