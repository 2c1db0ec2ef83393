"""flowcs: learn where to measure with conditional flow matching over sampling masks."""

__version__ = "0.1.0"
