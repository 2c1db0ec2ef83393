"""One evaluation path for every experiment, ``flowcs compare`` and the benchmarks.

:class:`Setup` (what an experiment hands over) → :func:`evaluate` (the one loop) → :class:`Results` (per-sample
values of every metric, row, budget and seed) → rows (:func:`seed_row`, :func:`image_row`) → the SPEC §9 payload
and its Markdown table (:mod:`.tables`) and figures (:mod:`.figures`).
"""

from .loop import Entry, MaskEvent, evaluate
from .results import Results, Timing, image_row, seed_row
from .setup import MetricFn, Reader, Setup, Split, TrainData

__all__ = ["Entry", "MaskEvent", "evaluate", "Results", "Timing", "image_row", "seed_row", "Setup", "Split",
           "TrainData", "MetricFn", "Reader"]
