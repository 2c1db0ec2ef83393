"""The MRI experiments ``mri-4x`` and ``mri-8x``: one :class:`MRIExperiment` class, two configurations."""

from .config import Config, Config8x, line_budget
from .data import Geometry, lf_condition, load_splits, normalise, prepare
from .experiment import MRI_4X, MRI_8X, POLICY_ORDER, MRIExperiment
from .stages import trained_encoder, trained_flow, trained_modl

__all__ = ["Config", "Config8x", "line_budget", "Geometry", "lf_condition", "load_splits", "normalise", "prepare",
           "MRIExperiment", "MRI_4X", "MRI_8X", "POLICY_ORDER", "trained_encoder", "trained_flow", "trained_modl"]
