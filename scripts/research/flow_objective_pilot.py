"""Research record (closing note 25, docs/design.md "Objectives tried on validation"): short validation pilots of
the mnist-classify flow stage with objective variants patched in from outside src/ (a src change needs a full
reproduction of results/ before it can land). Not a public tool; it reads flowcs internals.

usage (repository root, one thread per job):
  flowcs run mnist-classify --run-dir runs/diag/mc-all --threads 1 --device cpu --set eval.split=val   # frozen models
  OMP_NUM_THREADS=1 python scripts/research/flow_objective_pilot.py NAME VARIANT STEPS [key=value ...]
VARIANT: base  - the committed objective (task loss through the sigmoid gate on the one-step estimate x1_hat)
         st    - the same, but the task loss reads the HARD top-k of x1_hat (straight-through: forward hard, grad soft)
         e2e   - end to end: the sampler itself (flow.steps Euler steps) with gradient, ST top-k of its standardised
                 final scores, task loss; flow.rounds > 1 trains one round per batch on no-grad roll-outs
         joint - end to end over all flow.rounds rounds at once: each round's new locations are an ST top-k, round r's
                 condition is rebuilt from the hard masks of rounds < r, one task loss on the full budget
key=value: config overrides (flow.steps=4, flow.rounds=4, ...) and val=N (validation digits scored, default 1000),
temp=T (ST sigmoid temperature on z-scores), seed=S, zero=1 (x0 = 0 at evaluation), tag=T (result name suffix),
trunk=1 (the flow's condition encoder is a *trainable* copy of the U-Net encoder, fine-tuned by the flow's loss, as
A-DPS trains its own image trunk on the task; the run's U-Net itself stays untouched), arch=adps (A-DPS's own
network as the velocity field: its conv trunk reads the U-Net input, its MLP head the trunk's features and the
acquired mask; no U-Net features, no x_t: with one Euler step x1 = x0 + logits, a Gaussian-perturbed top-k),
condgrad=1 (joint only: round r's condition is measured with the straight-through mask of rounds < r, so the task
loss also reaches earlier rounds through later rounds' inputs, as A-DPS trains; the encoder's weights stay frozen),
relax=adps (joint only: each round's straight-through gradient is A-DPS's relaxation of the raw scores, sequential
softmax for small rounds, instead of a sigmoid of the standardised scores), linear=1 (the task reads the image
measured *once* with the straight-through mask, A_1ᴴ(m ⊙ y), as the peers train (policies/training.py); the
default zero_filled(measure(x, m), m) applies m twice, so an unselected pixel (m = 0) gets no gradient).
The classifier and U-Net checkpoints of runs/diag/mc-all are linked (same seed and code); the flow stage trains for
STEPS steps per epoch (flow.loop.epochs=E for more). Scores the first VAL validation digits (never the test split)
at 1 / 4 / 8 %; appends to runs/pilot/results.jsonl and saves per-digit correctness for paired differences.
"""
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

torch.set_num_threads(1)
import flowcs.experiments.classify as classify  # noqa: E402
import flowcs.experiments.pixel as pixel  # noqa: E402
import flowcs.flow.objective as objective  # noqa: E402
from flowcs.evaluation.loop import Entry, evaluate  # noqa: E402
from flowcs.experiments import get_experiment  # noqa: E402
from flowcs.experiments.context import build_context  # noqa: E402
from flowcs.flow.model import FlowModel, FrozenEncoder  # noqa: E402
from flowcs.flow.policy import acquire_in_rounds, integrate_scores  # noqa: E402
from flowcs.masks import rate_to_budget, select_topk, sigmoid_gate, split_budget, topk_threshold  # noqa: E402
from flowcs.policies.adps import ADPSNet  # noqa: E402
from flowcs.policies.dps import relaxed_topk  # noqa: E402

name, variant, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
extra = dict(a.split("=", 1) for a in sys.argv[4:])
VAL = int(extra.pop("val", 1000))
E2E_TEMP = float(extra.pop("temp", 1.0))
ZERO = extra.pop("zero", "0") == "1"
TAG = extra.pop("tag", "")
SEED = int(extra.pop("seed", 0))
TRUNK = extra.pop("trunk", "0") == "1"
ARCH = extra.pop("arch", "unet")
CONDGRAD = extra.pop("condgrad", "0") == "1"
RELAX = extra.pop("relax", "zsigmoid")
LINEAR = extra.pop("linear", "0") == "1"
run = Path("runs/pilot") / name
run.mkdir(parents=True, exist_ok=True)
for f in ("classifier.pt", "unet.pt"):
    if not (run / f).exists():
        os.symlink(Path("runs/diag/mc-all").resolve() / f, run / f)
over = ["flow.loop.epochs=1", f"flow.loop.steps_per_epoch={steps}", "eval.split=val"]
over += [f"{k}={v}" for k, v in extra.items()]
ctx = build_context("mnist-classify", overrides=over, run_dir=str(run), device="cpu", seed=SEED)
exp = get_experiment("mnist-classify")


def st_gate(scores, k, t, a=30.0, b=1.0, acquired=None):
    soft = sigmoid_gate(scores, k, t, a, b, acquired)
    acq = torch.zeros_like(scores, dtype=torch.bool) if acquired is None else acquired.bool()
    hard = (select_topk(scores, k, acq) | acq).to(soft.dtype)
    return hard + soft - soft.detach()


def st_topk(xs, k, acquired):
    """ST top-k of standardised scores among the free locations: forward hard new locations, grad sigmoid."""
    free = (~acquired).float()
    cnt = free.sum(1, keepdim=True)
    z = xs.masked_fill(acquired, 0.0)
    mu = (z * free).sum(1, keepdim=True) / cnt
    sd = (((z - mu) ** 2 * free).sum(1, keepdim=True) / cnt).sqrt() + 1e-6
    zs = (xs - mu) / sd
    tau = topk_threshold(zs.detach(), k, acquired)
    soft = torch.sigmoid((zs - tau) / E2E_TEMP) * free
    hard = select_topk(zs, k, acquired)
    return hard, hard.to(soft.dtype) + soft - soft.detach()


def sampled_scores(self, condition, acquired, generator):
    """The sampler's final scores WITH gradient (flow.steps Euler steps from fresh noise; integrate_scores sets no
    autograd context)."""
    return integrate_scores(self.model, condition, acquired, self.operator.n_locations, ctx.cfg.flow.steps, 1,
                            generator)


def task_output(self, x, y, m, acquisition):
    """The objective's output dict for the task loss of the (straight-through) mask ``m`` (``linear=1``: the
    batch's own full measurement, masked once by ``Acquisition.observe``)."""
    op = self.operator
    zf = acquisition.observe(m) if LINEAR else op.zero_filled(op.measure(x, m), m)
    l_task = self.task.loss(self.task.predict(zf, op.mask_to_image(m)), y)
    zero = torch.zeros((), device=x.device)
    return {"loss": l_task, "task": l_task.detach(), "fm": zero, "s_fm": zero, "s_task": zero}


def e2e_forward(self, x, y, condition, acquired, k, generator=None, acquisition=None):
    if self.rounds > 1:  # roll out rounds 0..r-1 with the current sampler (no grad), train round r end to end
        sizes = split_budget(k, self.rounds)
        r = int(torch.randint(len(sizes), (1,), generator=generator)) if len(sizes) > 1 else 0
        if r > 0:
            with torch.no_grad():
                acquired = acquire_in_rounds(lambda c, a: sampled_scores(self, c, a, generator),
                                             acquisition.condition, condition, acquired, sizes[:r])
                condition = acquisition.condition(acquired)
        k = sizes[r]
    _, st = st_topk(sampled_scores(self, condition, acquired, generator), k, acquired)
    return task_output(self, x, y, acquired.float() + st, acquisition)


def joint_forward(self, x, y, condition, acquired, k, generator=None, acquisition=None):
    """All R rounds rolled out WITH gradient through each round's ST mask; one task loss at the full budget
    (non-greedy, like A-DPS). Conditions between rounds are rebuilt from the hard masks (no grad through them)."""
    taken = acquired.bool()
    m = taken.float()
    for r, c in enumerate(split_budget(k, self.rounds)):
        if r > 0:
            condition = acquisition.condition(m if CONDGRAD else taken)
        scores = sampled_scores(self, condition, taken, generator)
        if RELAX == "adps":
            hard = select_topk(scores.detach(), c, taken)
            soft = relaxed_topk(scores, hard, c, taken, 1.0, "auto")
            st = hard.to(soft.dtype) + soft - soft.detach()
        else:
            hard, st = st_topk(scores, c, taken)
        m = m + st
        taken = taken | hard
    return task_output(self, x, y, m, acquisition)


class GradThroughEncoder(FrozenEncoder):
    """A FrozenEncoder without its no_grad: gradient reaches the condition (condgrad=1) and, once its weights are
    set trainable, the weights (trunk=1; same state-dict keys, so load_stage restores the fine-tuned copy).
    Normalisation layers stay in eval mode either way."""

    def forward(self, condition):
        return getattr(self.net, self.method)(condition)


def condgrad_flow_model(unet, operator, net):
    model = _build_flow_model(unet, operator, net)
    model.encoder.__class__ = GradThroughEncoder
    return model


def trunk_flow_model(unet, operator, net):
    model = condgrad_flow_model(copy.deepcopy(unet), operator, net)
    for p in model.encoder.net.parameters():
        p.requires_grad_(True)
    return model


class PassCondition(nn.Module):
    def forward(self, condition):
        return condition


class ADPSVelocity(nn.Module):
    """arch=adps: A-DPS's network (same widths as the compare peer) maps [U-Net input] ⊕ acquired mask to N
    logits; the velocity ignores x_t and t."""

    def __init__(self, n_locations):
        super().__init__()
        self.net = ADPSNet(1, n_locations)

    def forward(self, x_t, t, feats):
        condition, acquired = feats
        f = self.net.trunk(condition)
        return self.net.head(torch.cat([f, acquired.to(f.dtype)], dim=1))


def adps_flow_model(unet, operator, net):
    return FlowModel(PassCondition(), ADPSVelocity(operator.n_locations), acquired_input=True)


_build_flow_model = pixel.build_flow_model
if RELAX not in ("zsigmoid", "adps"):
    sys.exit(f"unknown relax {RELAX}")
if ARCH not in ("unet", "adps"):
    sys.exit(f"unknown arch {ARCH}")
if TRUNK and ARCH == "adps":
    sys.exit("trunk=1 fine-tunes the U-Net encoder; arch=adps has none")
builder = (trunk_flow_model if TRUNK else adps_flow_model if ARCH == "adps"
           else condgrad_flow_model if CONDGRAD else None)  # trunk and adps pass gradient to the condition already
if builder is not None:
    pixel.build_flow_model = classify.build_flow_model = builder

if variant == "joint":
    objective.FlowTaskObjective.forward = joint_forward
elif variant == "st":
    objective.sigmoid_gate = st_gate
elif variant == "e2e":
    objective.FlowTaskObjective.forward = e2e_forward
elif variant != "base":
    sys.exit(f"unknown variant {variant}")

t0 = time.time()
if not (run / "flow.pt").exists():
    xtr, ytr, _ = exp.load_data(ctx, "train")
    torch.manual_seed(SEED)
    exp.train_flow(ctx, ctx.cfg.flow, xtr, ytr)
train_s = time.time() - t0
if ZERO:  # after training: x0 = 0 at evaluation only (training's sampler shares integrate_scores)
    import flowcs.flow.policy as fpol
    fpol.randn_rows = lambda *shape, generator=None, device="cpu": torch.zeros(*shape, device=device)
setup = exp.setup(ctx, split="val")
setup.test = setup.test.head(VAL)
rates = [1.0, 4.0, 8.0]
budgets = [rate_to_budget(r, setup.operator.n_locations) for r in rates]
pol = exp.flow_policy(ctx)
res = evaluate(setup, {"flow": Entry(pol)}, exp.draws(ctx), 1, 500, ctx.device, budgets=budgets, desc=name)
out = {"name": name + TAG, "zero": ZERO, "trunk": TRUNK, "arch": ARCH, "condgrad": CONDGRAD, "relax": RELAX,
       "linear": LINEAR, "variant": variant, "steps": steps, "extra": extra,
       "val_images": VAL, "seed": SEED, "train_s": train_s}
per_image = {r: res.values[setup.primary]["flow"][b][0].float() for r, b in zip(rates, budgets)}
for r, v in per_image.items():
    out[f"acc@{r:g}"] = round(100 * float(v.mean()), 2)
    out[f"se@{r:g}"] = round(100 * float(v.std() / math.sqrt(len(v))), 2)
torch.save(per_image, run / f"per_image{TAG}.pt")
print(json.dumps(out), flush=True)
with open("runs/pilot/results.jsonl", "a") as fh:
    fh.write(json.dumps(out) + "\n")
