"""Short training runs through the one training loop: losses go down, resume replays the same run."""

from __future__ import annotations

import json

import pytest
import torch

from flowcs.data import load_mnist
from flowcs.experiments.pixel import (
    FlowNetConfig,
    FlowTrainConfig,
    MaskedTaskObjective,
    build_flow_model,
    build_flow_objective,
    flow_batch_fn,
)
from flowcs.operators import PixelOperator
from flowcs.tasks.base import ClassificationTask
from flowcs.tasks.classifier import MLPClassifier
from flowcs.tasks.unet import ReconUNet
from flowcs.training.loop import LoopConfig, fit

OP = PixelOperator(1, 28, 28)


@pytest.fixture(scope="module")
def digits(shared_data_module):
    s = load_mnist(shared_data_module / "mnist", "test")
    return s.images[:2048].float().div(255).unsqueeze(1), s.labels[:2048]


@pytest.fixture(scope="module")
def shared_data_module():
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED_DATA / 'mnist'}")
    return SHARED_DATA


def _losses(path, key="loss"):
    return [json.loads(line)[key] for line in path.read_text().splitlines()]


def _fit_classifier(x, y, out, steps=60, resume=False, crash_at=None):
    torch.manual_seed(0)
    obj = MaskedTaskObjective(ClassificationTask(MLPClassifier()), OP, 20.0, 60.0)
    cfg = LoopConfig(epochs=2, batch_size=64, lr=2e-3, steps_per_epoch=steps // 2, log_every=10, checkpoint_every=10)
    calls = {"n": 0}

    def batch_fn(idx, _gen):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise RuntimeError("simulated crash")
        return {"x": x[idx], "y": y[idx]}

    fit(obj, batch_fn, x.shape[0], cfg, out_dir=out, name="clf", signature={}, seed=3, device=torch.device("cpu"),
        resume=resume)
    return obj


def test_classifier_loss_goes_down(digits, tmp_path):
    x, y = digits
    _fit_classifier(x, y, tmp_path)
    losses = _losses(tmp_path / "clf.log.jsonl")
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.3, losses


def test_resumed_training_equals_uninterrupted(digits, tmp_path):
    x, y = digits
    straight = _fit_classifier(x, y, tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):  # dies in step 24 (2nd epoch), last checkpoint: 20
        _fit_classifier(x, y, tmp_path / "b", crash_at=25)
    resumed = _fit_classifier(x, y, tmp_path / "b", resume=True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_flow_objective_lowers_fm_loss(digits, tmp_path):
    x, y = digits
    torch.manual_seed(0)
    task = ClassificationTask(MLPClassifier()).freeze()
    unet = ReconUNet(2, 1, (8, 16, 16), 16)
    cfg = FlowTrainConfig(net=FlowNetConfig([8, 8, 16], 16, 16), steps=4,
                          loop=LoopConfig(epochs=1, batch_size=32, lr=3e-3, steps_per_epoch=40, log_every=10))
    obj = build_flow_objective(build_flow_model(unet, OP, cfg.net), task, OP, cfg)
    fit(obj, flow_batch_fn(x, y, OP, cfg, torch.device("cpu")), x.shape[0], cfg.loop, out_dir=tmp_path, name="flow",
        signature={}, seed=0, device=torch.device("cpu"))
    fm = _losses(tmp_path / "flow.log.jsonl", "fm")
    # v = 0 at start gives E|x1 - x0|^2 = 1 + 1 = 2; a learned field does much better
    assert fm[0] > 1.2 and fm[-1] < 0.8 * fm[0], fm
