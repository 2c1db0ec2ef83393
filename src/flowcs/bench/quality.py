"""How few Euler steps and samples keep the masks: the speed–quality table, on validation images.

Every (steps, samples) setting of the run's own flow is evaluated with the experiment's evaluation loop (same
images, noise and flow start noise for every setting), and compared *paired* with the reference setting (the
most steps and samples asked for): mean SSIM, the per-image SSIM difference with its bootstrap 95 % interval,
the share of masks identical to the reference's, and the mean pairwise IoU of the masks across images
(adaptivity: 1 = a fixed mask). The shipped ``flow.steps`` / ``flow.samples`` are chosen from this table.
"""

from __future__ import annotations

import torch

from ..evaluation.loop import Entry, MaskEvent, evaluate
from ..evaluation.results import mean_pairwise_iou
from ..flow.policy import FlowPolicy
from ..metrics import summarize

__all__ = ["quality_table"]


def _variant(policy: FlowPolicy, steps: int, samples: int) -> FlowPolicy:
    return FlowPolicy(policy.model, policy.n_locations, steps=steps, samples=samples, rounds=policy.rounds,
                      condition_fn=policy.condition_fn, operator=policy.operator, prior=policy.prior)


def quality_table(experiment, ctx, setup, policy: FlowPolicy, steps: list[int], samples: list[int], seeds: int,
                  batch_size: int) -> dict:
    """Rows per ``"steps=S samples=M"`` on ``setup.test`` (validation images); see the module doc."""
    names = {f"steps={s} samples={m}": (s, m) for s in steps for m in samples}
    reference = f"steps={max(steps)} samples={max(samples)}"
    entries = {name: Entry(_variant(policy, s, m), draw_name="flow") for name, (s, m) in names.items()}
    masks: dict[str, list] = {name: [] for name in names}
    budget = setup.budgets[0]

    def keep(ev: MaskEvent) -> None:
        masks[ev.name].append((ev.seed_index, ev.rows, ev.masks[budget] & ~ev.acquired))

    res = evaluate(setup, entries, experiment.draws(ctx), seeds, batch_size, ctx.device, on_masks=keep,
                   desc="speed-quality")
    per_image = {name: res.per_image(setup.primary, name, budget) for name in names}

    def stacked(name: str) -> torch.Tensor:
        parts = sorted(masks[name], key=lambda p: (p[0], int(p[1][0])))
        return torch.cat([m.cpu() for _, _, m in parts])

    ref_masks = stacked(reference)
    table = {}
    for name, (s, m) in names.items():
        diff = summarize(per_image[name] - per_image[reference])
        mine = stacked(name)
        first_seed = [m_ for seed, _, m_ in sorted(masks[name], key=lambda p: (p[0], int(p[1][0]))) if seed == 0]
        table[name] = {"steps": s, "samples": m, f"{setup.primary}_mean": round(float(per_image[name].mean()), 5),
                       f"{setup.primary}_minus_reference": round(diff["mean"], 5),
                       "ci95_minus_reference": [round(v, 5) for v in diff["ci95"]],
                       "masks_equal_to_reference": f"{int((mine == ref_masks).all(1).sum())}/{mine.shape[0]}",
                       "mean_pairwise_iou": round(mean_pairwise_iou(torch.cat(first_seed)), 4)
                       if len(setup.test) > 1 else None}
    return {"reference": reference, "split": setup.test.split, "images": len(setup.test), "seeds": seeds,
            "metric": setup.primary, "rows": table,
            "note": "paired with the reference setting on the same images, k-space noise and flow start noise; "
                    "ci95: bootstrap interval of the mean per-image difference (images, seeds averaged)"}
