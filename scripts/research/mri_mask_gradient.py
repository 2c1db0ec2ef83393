"""Research record (closing note 26, docs/design.md): ∂(task loss)/∂m per k-space line at the central block, for
the first validation images of an mri-8x run directory — why a straight-through gradient cannot add lines.

usage (repository root): python scripts/research/mri_mask_gradient.py RUN_DIR [IMAGES]
"""
import sys

import torch

from flowcs.experiments import get_experiment
from flowcs.experiments.context import build_context
from flowcs.policies.cartesian import LowFrequencyPolicy

run, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4
ctx = build_context("mri-8x", overrides=["eval.split=val"], run_dir=run, device="cpu", seed=0)
setup = get_experiment("mri-8x").setup(ctx, split="val")
op = setup.operator
x = setup.test.x[:n]
acquired = setup.first.acquired(x.shape[0], op.n_locations, torch.Generator().manual_seed(0), x.device)
condition = setup.condition(op, op.zero_filled(op.measure(x, acquired), acquired), acquired)
block = LowFrequencyPolicy(op.n_locations).propose(condition, setup.budgets[0], acquired)
m = block.float().requires_grad_()
setup.task.loss(setup.task.predict(op.zero_filled(op.measure(x, m), m), op.mask_to_image(m)), x).backward()
for i in range(x.shape[0]):
    new = block[i] & ~acquired[i]
    print(f"image {i}: LF band {m.grad[i][acquired[i]].mean():+.1e}, block's new lines {m.grad[i][new].mean():+.1e} "
          f"(min {m.grad[i][new].min():+.1e}), unselected lines: max |grad| {m.grad[i][~block[i]].abs().max():.1e}")
