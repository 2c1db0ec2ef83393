"""flowcs: learn where to measure with conditional flow matching over sampling masks."""

__version__ = "0.1.0"

from .registry import register_experiment, register_operator, register_policy, register_task  # noqa: E402, F401
