"""The core on a CUDA device: same numbers as on the CPU, exact budgets, and a training loop that runs there.

Skipped (with the reason) on machines without CUDA — CI has none; run on a GPU machine with
``pytest tests/test_cuda.py``. Randomness comes from CPU generators everywhere (``flowcs.rng``), so a
policy proposes the same mask on either device for the same seed, up to float ties.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowcs.experiments.pixel import (
    FlowNetConfig,
    FlowTrainConfig,
    build_flow_model,
    build_flow_objective,
    first_measurement,
    flow_batch_fn,
)
from flowcs.flow.policy import FlowPolicy
from flowcs.masks import select_topk, sigmoid_gate
from flowcs.operators import KSpaceLineOperator, PixelOperator
from flowcs.policies import ADPSNet, ADPSPolicy, ADSPolicy, DPSPolicy, ImagePriorNet, LOUPEPolicy, observer
from flowcs.policies.training import full_measurement
from flowcs.tasks.base import ClassificationTask
from flowcs.tasks.classifier import MLPClassifier
from flowcs.tasks.unet import ReconUNet
from flowcs.training.checkpoint import load_checkpoint
from flowcs.training.loop import LoopConfig, fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
CUDA = torch.device("cuda")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("op", [PixelOperator(3, 8, 8), KSpaceLineOperator(16, 16)], ids=["pixel", "kspace"])
def test_operators_agree_with_cpu(op):
    c = op.image_shape[0]
    x = torch.randn(4, c, *op.image_shape[1:], generator=_gen())
    mask = torch.rand(4, op.n_locations, generator=_gen(1)) < 0.3
    y_cpu = op.measure(x, mask)
    y_gpu = op.measure(x.to(CUDA), mask.to(CUDA))
    assert y_gpu.device.type == "cuda"
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(op.zero_filled(y_gpu, mask.to(CUDA)).cpu(), op.zero_filled(y_cpu, mask),
                               atol=1e-5, rtol=1e-5)


def test_topk_and_gate_on_cuda():
    scores = torch.randn(5, 100, generator=_gen()).to(CUDA)
    acquired = torch.zeros(5, 100, dtype=torch.bool, device=CUDA)
    acquired[:, :7] = True
    new = select_topk(scores, 11, acquired)  # the new locations only
    assert new.device.type == "cuda" and (new.sum(1) == 11).all() and not (new & acquired).any()
    gated = sigmoid_gate(scores, 11, torch.full((5,), 0.5, device=CUDA), 30.0, 1.0, acquired)
    assert gated.device.type == "cuda" and torch.isfinite(gated).all()


def _flow_policy():
    torch.manual_seed(0)
    op = PixelOperator(1, 12, 12)
    model = build_flow_model(ReconUNet(2, 1, (4, 8, 8), 8), op, FlowNetConfig([4, 8, 8], 8, 16))
    nn.init.normal_(model.velocity.out.weight, std=0.5)
    return FlowPolicy(model, op.n_locations, steps=4), op


def test_flow_policy_same_masks_on_cuda_and_cpu():
    policy, op = _flow_policy()
    x = torch.rand(6, 1, 12, 12, generator=_gen(2))
    acquired, cond = first_measurement(op, x, 10, _gen(3))
    cpu = policy.propose(cond, 9, acquired, _gen(4))
    policy.model.to(CUDA)
    gpu = policy.propose(cond.to(CUDA), 9, acquired.to(CUDA), _gen(4))
    assert gpu.device.type == "cuda" and ((gpu & ~acquired.to(CUDA)).sum(1) == 9).all()
    agree = (gpu.cpu() == cpu).float().mean()
    assert agree > 0.98, f"CPU and CUDA masks differ at {1 - agree:.1%} of locations"


@pytest.mark.parametrize("name", ["loupe", "dps", "adps", "ads"])
def test_peers_propose_exact_budgets_on_cuda(name):
    op = PixelOperator(1, 8, 8)
    torch.manual_seed(0)
    if name == "loupe":
        pol = LOUPEPolicy(op.n_locations, seed=1)
    elif name == "dps":
        pol = DPSPolicy(op.n_locations, seed=1)
    elif name == "adps":
        pol = ADPSPolicy(ADPSNet(1, op.n_locations, (4, 8, 8), 16, 2), op, steps=3)
    else:
        pol = ADSPolicy(ImagePriorNet(1, (4, 8), 8), op, samples=3, steps=2, per_round=2)
    (pol.prior if name == "ads" else pol).to(CUDA)
    x = torch.rand(4, 1, 8, 8, generator=_gen()).to(CUDA)
    acquired = torch.zeros(4, op.n_locations, dtype=torch.bool, device=CUDA)
    acquired[:, :5] = True
    observe = observer(op, full_measurement(op, x))
    mask = pol.propose(torch.zeros(4, 2, 8, 8, device=CUDA), 7, acquired, _gen(1), observe=observe)
    assert mask.device.type == "cuda" and ((mask & ~acquired).sum(1) == 7).all() and mask[:, :5].all()


def test_flow_training_loop_runs_on_cuda_and_loads_on_cpu(tmp_path):
    torch.manual_seed(0)
    op = PixelOperator(1, 28, 28)
    x = torch.rand(256, 1, 28, 28, generator=_gen())
    y = torch.randint(0, 10, (256,), generator=_gen(1))
    task = ClassificationTask(MLPClassifier().to(CUDA)).freeze()  # the frozen task is not a submodule
    cfg = FlowTrainConfig(net=FlowNetConfig([4, 8, 8], 8, 16), steps=3,
                          loop=LoopConfig(epochs=1, batch_size=32, lr=3e-3, steps_per_epoch=6, log_every=2,
                                          checkpoint_every=3))
    obj = build_flow_objective(build_flow_model(ReconUNet(2, 1, (4, 8, 8), 8), op, cfg.net), task, op, cfg).to(CUDA)
    fit(obj, flow_batch_fn(x, y, op, cfg, CUDA), x.shape[0], cfg.loop, out_dir=tmp_path, name="flow",
        signature={"t": 1}, seed=0, device=CUDA)
    ckpt = load_checkpoint(tmp_path / "flow.pt", "flow", {"t": 1})
    assert ckpt["global_step"] == 6 and ckpt["done"]
    assert all(v.device.type == "cpu" and torch.isfinite(v.float()).all() for v in ckpt["model"].values())
