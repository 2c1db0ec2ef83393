"""``python -m flowcs`` (and ``torchrun -m flowcs``) entry point."""

import sys

from .cli import main

sys.exit(main())
