"""The ablation trains every variant from the same initial state, and paired comparisons say tie / ahead / behind."""

from types import SimpleNamespace

import pytest
import torch

from flowcs.evaluation.results import Results, paired_difference
from flowcs.experiments import ablation as ablation_module
from flowcs.experiments.ablation import AblationConfig, run_flow_ablation
from flowcs.experiments.compare_report import paired_vs_flow
from flowcs.training.loop import LoopConfig


class _Data:
    source, split = "fake", "val"

    def head(self, n):
        return self

    def __len__(self):
        return 4


def _fake_run(monkeypatch, starts: list, consume: int, load_from: int = 99):
    """Run the ablation loop with a stub experiment; ``train_flow`` records the global RNG draw it starts from
    and moves the RNG by ``consume`` draws (training) for the variants before ``load_from`` (loaded after)."""
    setup = SimpleNamespace(test=_Data(), operator=SimpleNamespace(n_locations=100), budget_unit="percent",
                            primary="mae", higher_is_better=False, first=SimpleNamespace(count=1), table_scale=1.0)
    experiment = SimpleNamespace(name="fake", setup=lambda ctx, split: setup, draws=lambda ctx: None,
                                 flow_policy=lambda ctx, cfg, stage: None)
    a = AblationConfig(gates=[[30, 1]], rounds=[1, 4], targets=["saliency"], losses=["task"], rates=[4.0],
                       loop=LoopConfig(epochs=1, batch_size=2, steps_per_epoch=1))
    flow = SimpleNamespace(loop=None, gate_a=30.0, gate_b=1.0, rounds=1, target="saliency", loss="task")
    ctx = SimpleNamespace(cfg=SimpleNamespace(ablation=a, flow=flow, eval=SimpleNamespace(batch_size=2)), seed=3,
                          device="cpu", dist=SimpleNamespace(is_main=False))

    def evaluate(setup, entries, draws, seeds, batch, device, budgets, desc):
        return SimpleNamespace(values={"mae": {"flow": {b: torch.ones(1, 4) for b in budgets}}})

    monkeypatch.setattr(ablation_module, "evaluate", evaluate)
    monkeypatch.setattr(ablation_module, "target_quality", lambda *args: {})
    monkeypatch.setattr(ablation_module.dataclasses, "replace", lambda obj, **kw: SimpleNamespace(**kw))

    def train_flow(cfg, stage):
        starts.append(float(torch.rand(1)))
        if len(starts) < load_from:
            torch.rand(consume)

    torch.manual_seed(123)
    return run_flow_ablation(experiment, ctx, train_flow)


def test_every_ablation_variant_starts_from_the_same_rng_state_whatever_ran_before(monkeypatch):
    trained, resumed = [], []
    payload = _fake_run(monkeypatch, trained, consume=1000)
    _fake_run(monkeypatch, resumed, consume=1000, load_from=3)  # a resumed run: the first variants are loaded
    assert len(trained) == 5 and len(set(trained)) == 1  # gate row + two rounds rows + two joint rows, one start
    assert resumed == trained
    assert payload["winner"] in payload["policies"]


def test_paired_difference_verdicts_follow_the_metric_direction():
    base = torch.linspace(0.5, 0.9, 50).repeat(2, 1)
    better = base + 0.01 + 0.001 * torch.randn(2, 50, generator=torch.Generator().manual_seed(0))
    up = paired_difference(better, base, higher_is_better=True)
    assert up["verdict"] == "ahead" and up["ci95"][0] > 0 and up["n"] == 50
    assert paired_difference(better, base, higher_is_better=False)["verdict"] == "behind"
    noise = base + 0.01 * torch.randn(2, 50, generator=torch.Generator().manual_seed(1))
    noise -= (noise - base).mean()  # mean difference exactly 0
    tie = paired_difference(noise, base, higher_is_better=True)
    assert tie["verdict"] == "tie" and tie["ci95"][0] < 0 < tie["ci95"][1]
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(base, base[:, :10], True)


def test_paired_vs_flow_uses_the_ads_subset_and_seeds_only():
    g = torch.Generator().manual_seed(2)
    flow = torch.rand(3, 20, generator=g)
    res = Results(budgets=[5], values={"ssim": {"flow": {5: flow}, "dps": {5: flow - 0.1},
                                                 "ads": {5: flow[:1, :6] + 0.2}}})
    out = paired_vs_flow(res, "ssim", ["flow", "dps", "ads"], [5], True, n_ads=6, ads_seeds=1)
    assert out["policies"]["dps"]["verdict"] == ["ahead"] and out["policies"]["dps"]["n"] == 20
    assert out["policies"]["dps"]["diff"][0] == pytest.approx(0.1)
    assert out["policies"]["ads"]["verdict"] == ["behind"] and out["policies"]["ads"]["n"] == 6
    assert out["policies"]["ads"]["diff"][0] == pytest.approx(-0.2)
