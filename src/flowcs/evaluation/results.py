"""Per-sample evaluation values and the statistics reported from them.

:class:`Results` keeps every value the evaluation computed: ``values[metric][row][budget]`` is a float tensor
(seeds, samples) — one entry per evaluation seed and test sample — so per-seed, per-image and per-volume
statistics and paired comparisons all come from the same arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..metrics import summarize

__all__ = ["Results", "Timing", "seed_row", "image_row", "mean_pairwise_iou", "paired_difference"]


@dataclass
class Timing:
    """Wall time a policy spent deciding (``propose_many`` calls), per image and per acquired location."""

    seconds: float = 0.0
    images: int = 0
    locations: int = 0  # images × new locations decided (largest budget)

    def as_dict(self) -> dict:
        return {"seconds": round(self.seconds, 3), "images": self.images,
                "ms_per_image": round(1000 * self.seconds / max(self.images, 1), 3),
                "ms_per_location": round(1000 * self.seconds / max(self.locations, 1), 4)}


@dataclass
class Results:
    """``values[metric][row][budget]``: (seeds, samples) per-sample values; ``timing[policy]``: decision time."""

    budgets: list[int]
    values: dict[str, dict[str, dict[int, torch.Tensor]]] = field(default_factory=dict)
    timing: dict[str, Timing] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return list(self.values)

    def rows(self, metric: str | None = None) -> list[str]:
        metric = metric or self.metrics[0]
        return list(self.values[metric])

    def per_seed(self, metric: str, row: str) -> list[dict[int, torch.Tensor]]:
        """``[{budget: (samples,)} per seed]`` (the shape :func:`seed_row` reads)."""
        per = self.values[metric][row]
        n_seeds = next(iter(per.values())).shape[0]
        return [{b: v[s] for b, v in per.items()} for s in range(n_seeds)]

    def per_image(self, metric: str, row: str, budget: int) -> torch.Tensor:
        """(samples,) values averaged over the evaluation seeds."""
        return self.values[metric][row][budget].mean(0)

    def seed_row(self, metric: str, row: str, budgets: Sequence[int] | None = None,
                 indices: torch.Tensor | None = None) -> dict:
        """:func:`seed_row` of one row (``budgets`` default: every evaluated budget)."""
        return seed_row([{row: d} for d in self.per_seed(metric, row)], row, budgets or self.budgets, indices)


def seed_row(per_seed: list[dict], name: str, budgets: Sequence[int], indices: torch.Tensor | None = None) -> dict:
    """One results row from per-sample values ``per_seed[s][name][budget]`` of several evaluation seeds.

    ``mean`` = mean over seeds of the per-seed means, ``std_seeds`` = their spread across seeds (0 with one
    seed), ``ci95`` = bootstrap 95 % interval of the mean over samples (all per-sample values pooled over seeds),
    ``n`` = samples per seed, ``seeds`` = evaluation seeds.
    ``indices`` restricts the row to a subset of the samples (e.g. a fixed test subset).
    """
    def values(run, b):
        v = run[name][b]
        return v if indices is None else v[indices]

    means, stds, ci = [], [], []
    for b in budgets:
        seed_means = torch.stack([values(run, b).double().mean() for run in per_seed])
        means.append(float(seed_means.mean()))
        stds.append(float(seed_means.std(unbiased=False)) if len(per_seed) > 1 else 0.0)
        ci.append(list(summarize(torch.cat([values(run, b) for run in per_seed]))["ci95"]))
    return {"mean": means, "std_seeds": stds, "ci95": ci, "n": int(values(per_seed[0], budgets[0]).numel()),
            "seeds": len(per_seed)}


def mean_pairwise_iou(masks: torch.Tensor) -> float:
    """Adaptivity of a policy as one number: the mean intersection-over-union of the locations it chose for
    different samples (``masks``: (n, N) bool, new locations only). 1.0 = the same mask for every sample (a fixed
    policy); uniformly random k of N locations give about k / (2N − k)."""
    m = masks.double()
    n = m.shape[0]
    if n < 2:
        raise ValueError("the pairwise IoU needs at least two masks")
    inter = m @ m.T
    size = m.sum(1)
    union = size[:, None] + size[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    return float((iou.sum() - iou.diagonal().sum()) / (n * (n - 1)))


def image_row(values: torch.Tensor) -> dict:
    """One-budget row from per-image values (each already averaged over the evaluation seeds): mean,
    ``std_images`` = spread across images, ``ci95`` = bootstrap 95 % interval of the mean over images, count."""
    sm = summarize(values)
    return {"mean": [sm["mean"]], "std_images": [sm["std"]], "n": sm["n"], "ci95": [list(sm["ci95"])]}


def paired_difference(ours: torch.Tensor, theirs: torch.Tensor, higher_is_better: bool) -> dict:
    """Ours − theirs on the same samples: the mean per-sample difference and its bootstrap 95 % interval.

    ``ours`` / ``theirs``: (seeds, samples) values from the same draws; each sample's difference is averaged over
    the seeds first, so the interval counts images, not image × seed pairs (the seeds share an image). A
    difference whose interval contains 0 is a ``tie``; otherwise ``ahead`` or ``behind`` by the metric's
    direction. Paired, because a hard image is hard for every policy: the unpaired intervals of two means overlap
    far more often than the difference is really unknown.
    """
    if ours.shape != theirs.shape:
        raise ValueError(f"paired values need the same shape, got {tuple(ours.shape)} and {tuple(theirs.shape)}")
    sm = summarize((ours.double() - theirs.double()).mean(0))
    lo, hi = sm["ci95"]
    sign = 1.0 if higher_is_better else -1.0
    verdict = "tie" if lo <= 0.0 <= hi else ("ahead" if sign * sm["mean"] > 0 else "behind")
    return {"diff": sm["mean"], "ci95": [lo, hi], "n": sm["n"], "verdict": verdict}
