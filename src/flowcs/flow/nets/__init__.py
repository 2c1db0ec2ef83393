"""Velocity networks v_θ(x_t, t, c)."""

from .conv_head import ConvVelocity
from .dual_unet import DualEncoderUNet
from .time_embedding import SinusoidalTimeEmbedding

__all__ = ["ConvVelocity", "DualEncoderUNet", "SinusoidalTimeEmbedding"]
