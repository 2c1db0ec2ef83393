"""flowcs plug-in: a 2-D k-space *point* geometry and the ``kspace-points`` experiment.

Importing this package registers both (``FLOWCS_PLUGINS=kspace_points``); installing it
(``pip install -e examples/kspace_points``) registers them through the entry points in its pyproject.toml.
"""

from flowcs.registry import register_experiment, register_operator

from .geometry import KSpacePointOperator, central_block

register_operator("kspace-points", KSpacePointOperator, replace=True)
register_experiment("kspace-points", "kspace_points.experiment:EXPERIMENT", replace=True)

__all__ = ["KSpacePointOperator", "central_block"]
