"""``flowcs data inspect PATH``: validate a data file or folder with the loaders' own checks.

What it recognises (by file name, like the loaders do):

* MNIST IDX files (``*-idx?-ubyte`` / ``.gz``) and the approximate training-image
  fallback ``mnist_train_from_png_approx.npz`` — read with :func:`flowcs.data.mnist.read_idx`
  (md5 check of the official ``.gz`` names included); a folder's splits are then loaded with
  :func:`flowcs.data.mnist.load_mnist`, which adds the cross-file checks (counts, shapes, labels).
* image folders (``.jpg``, ``.png``...) — every file decoded with
  :func:`flowcs.data.images.read_rgb`; mixed sizes reported as :func:`load_image_folder` does;
  the CelebA layout (``img_align_celeba/`` + ``list_eval_partition.txt``) with its partition file.
* fastMRI single-coil ``.h5`` volumes, real or synthetic — layout with
  :func:`flowcs.data.fastmri.inspect_volume`, every slice's values with
  :func:`flowcs.data.fastmri.read_volume_images` (the loader's NaN/Inf check).
* MATLAB ``.mat`` (Kellman fat-water images, multi-coil ``DATA`` k-space), BART ``.cfl/.hdr``
  pairs, and any other ``.npz`` / ``.npy`` array file (JPEG archives of the face sets included).
* a folder of such folders (a data root): each sub-folder is inspected.

The result is a :class:`Report`: summary lines for what is fine and one line per problem, each
starting with the file at fault (the loaders' own one-line :class:`~flowcs.errors.DataError`
messages, so ``inspect`` and training say the same thing). The CLI exits 0 when there is no
problem, 1 otherwise; a path that does not exist is a usage error (exit 2).

New formats plug in with :func:`register`.
"""

from __future__ import annotations

# the formats register themselves on import, in this order (earlier kinds win: an MNIST .npz is MNIST)
# isort: off
from . import mnist  # noqa: F401
from . import fastmri  # noqa: F401
from . import images  # noqa: F401
from . import matlab  # noqa: F401
from . import arrays  # noqa: F401
# isort: on
from .core import FOLDER_KINDS, KINDS, MAX_FILE_LINES, Kind, Report, inspect_path, register

__all__ = ["Report", "Kind", "KINDS", "FOLDER_KINDS", "register", "inspect_path", "MAX_FILE_LINES"]
