"""Research record (closing note 34, docs/design.md): the mnist-recon flow trained with a *mixture* of training
budgets — each batch's rate drawn uniformly in [rate_min, rate_max] with probability 1/2, else log-uniformly —
against the committed uniform draw, paired on the validation digits.

Why: issue 14's mnist-recon bar fails only at 10–20 px (A-DPS / DPS ahead by 0.0006–0.0027 MAE on test), and a
pure log-uniform draw (closing note 33, branch r30, lost) won 0.002 MAE at 10–20 px but lost 0.002–0.003 at
50–250 px on validation. A mixture keeps half the batches at large budgets.

usage (repository root), both flows on one frozen U-Net:
  OMP_NUM_THREADS=1 python scripts/research/mnist_recon_budget_mixture.py train mnist-recon --stage flow ...
      (the arguments of ``flowcs train``; trains with the mixture draw)
  python scripts/research/mnist_recon_budget_mixture.py paired RUN_A RUN_B [--seeds 2] [--digits 2000]
      (validation MAE of RUN_B's flow − RUN_A's flow per budget, same digits, first pixels, noise and draws)
"""
import argparse
import math
import sys

import torch

import flowcs.experiments.recon as recon
from flowcs.acquisition import Acquisition, RandomFirst, UNetInput
from flowcs.cli import main
from flowcs.evaluation.draws import NamedDraws
from flowcs.evaluation.loop import Entry, evaluate
from flowcs.evaluation.results import paired_difference
from flowcs.experiments import get_experiment
from flowcs.experiments.context import build_context
from flowcs.masks import rate_to_budget


def mixture_batch_fn(images, labels, operator, cfg, device):
    """:func:`flowcs.experiments.pixel.flow_batch_fn` with the budget mixture (same generator, same batches)."""
    lo, hi = math.log(cfg.rate_min), math.log(cfg.rate_max)

    def fn(idx, gen):
        x, y = images[idx].to(device), labels[idx].to(device)
        acq = Acquisition.start(operator, x, RandomFirst(cfg.first_samples), UNetInput(), gen)
        u, coin = (float(v) for v in torch.rand(2, generator=gen))
        rate = cfg.rate_min + (cfg.rate_max - cfg.rate_min) * u if coin < 0.5 else math.exp(lo + (hi - lo) * u)
        return {"x": x, "y": y, "condition": acq.condition(), "acquired": acq.acquired,
                "k": rate_to_budget(rate, operator.n_locations), "acquisition": acq}

    return fn


FLOW = ["flow.target=none", "flow.loss=task"]  # the settings both pilot flows were trained with


def paired(run_a: str, run_b: str, seeds: int, digits: int) -> None:
    exp = get_experiment("mnist-recon")
    sets = ["eval.split=val", f"data.val_subset={digits}", *FLOW]
    ctx_a = build_context("mnist-recon", overrides=sets, run_dir=run_a, device="cpu", seed=0)
    ctx_b = build_context("mnist-recon", overrides=sets, run_dir=run_b, device="cpu", seed=0)
    setup = exp.setup(ctx_a, split="val")
    entries = {"a": Entry(exp.flow_policy(ctx_a), draw_name="flow"),
               "b": Entry(exp.flow_policy(ctx_b), draw_name="flow")}
    res = evaluate(setup, entries, NamedDraws(0), seeds, 500, torch.device("cpu"), desc="paired val")
    print(f"validation digits: {len(setup.test)}, seeds {seeds}; MAE of B − A (negative: B better)")
    diffs = []
    for b in res.budgets:
        va, vb = res.values["mae"]["a"][b], res.values["mae"]["b"][b]  # (seeds, digits)
        d = paired_difference(vb, va, higher_is_better=False)
        diffs.append(vb - va)
        print(f"{b:4d} px: A {va.mean():.4f}  B {vb.mean():.4f}  B−A {d}")
    mean = paired_difference(torch.stack(diffs).mean(0), torch.zeros_like(diffs[0]), higher_is_better=False)
    print(f"mean over budgets: {mean}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["paired"]:
        p = argparse.ArgumentParser()
        p.add_argument("run_a")
        p.add_argument("run_b")
        p.add_argument("--seeds", type=int, default=2)
        p.add_argument("--digits", type=int, default=2000)
        a = p.parse_args(sys.argv[2:])
        paired(a.run_a, a.run_b, a.seeds, a.digits)
    else:
        recon.flow_batch_fn = mixture_batch_fn
        sys.exit(main(sys.argv[1:]))
