"""flowcs plug-in: the flow policy for Cartesian MRI lines with *your own* reconstruction network.

Importing this package registers the ``own-recon-mri`` experiment and the ``own-recon`` task
(``FLOWCS_PLUGINS=own_recon``); ``pip install -e examples/mri_own_network`` does it through entry points.
"""

from flowcs.registry import register_experiment, register_task

from .network import ResidualCNN
from .task import OwnReconTask

register_task("own-recon", OwnReconTask, replace=True)
register_experiment("own-recon-mri", "own_recon.experiment:EXPERIMENT", replace=True)

__all__ = ["ResidualCNN", "OwnReconTask"]
