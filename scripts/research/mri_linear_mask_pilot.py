"""Research record (closing note 26, docs/design.md): the MRI flow with a k-space operator that is *linear* in a
soft mask — zero-filled = Fᴴ y of the masked measurement and MoDL's A_mᴴA_m = Fᴴ diag(m) F — instead of the
committed m² form. Identical for binary masks; only training through soft / straight-through masks changes.

usage (repository root): OMP_NUM_THREADS=1 python scripts/research/mri_linear_mask_pilot.py run mri-8x ...
(the arguments of ``flowcs``; e.g. the joint-objective pilot of docs/design.md with --run-dir runs/pilot/mri8-jlin-r4)
"""
import sys

import flowcs.operators.kspace as kspace
import flowcs.tasks.modl as modl
from flowcs.cli import main
from flowcs.operators.fft import fft2c, ifft2c, to_complex, to_real


def adjoint(self, y, mask):
    self.check_mask(mask, y.shape[0])
    return to_real(ifft2c(to_complex(y)))  # y is already masked by measure()


def normal_op(x, mask):
    return to_real(ifft2c(fft2c(to_complex(x)) * mask.to(x.dtype)[:, None, :]))


kspace.KSpaceLineOperator.adjoint = adjoint
modl.normal_op = normal_op
sys.exit(main(sys.argv[1:]))
