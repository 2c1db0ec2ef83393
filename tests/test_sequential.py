"""Sequential acquisition with one flow model, the new target estimators, and validation splits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from flowcs.acquisition import Acquisition, RandomFirst, UNetInput
from flowcs.data.faces import _shared_split
from flowcs.data.mnist import train_val_split
from flowcs.flow.model import FlowModel, FrozenEncoder
from flowcs.flow.nets import DualEncoderUNet
from flowcs.flow.objective import FlowTaskObjective
from flowcs.flow.policy import FlowPolicy
from flowcs.flow.targets import TargetEstimator
from flowcs.masks import select_topk, split_budget
from flowcs.operators import PixelOperator
from flowcs.tasks.base import ClassificationTask, ReconstructionTask
from flowcs.tasks.classifier import MLPClassifier
from flowcs.tasks.unet import ReconUNet

OP = PixelOperator(1, 8, 8)
SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def flow_model(seed: int = 0) -> FlowModel:
    torch.manual_seed(seed)
    unet = ReconUNet(2, 1, (4, 8, 8), 8)
    velocity = DualEncoderUNet(8, 8, unet.feature_channels, (4, 8, 8), 8, 16)
    for p in velocity.out.parameters():  # a non-trivial field (the output layer starts at zero)
        nn.init.normal_(p, std=0.5)
    return FlowModel(FrozenEncoder(unet, "encode"), velocity)


def batch(n: int = 5, seed: int = 1):
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    acq = Acquisition.start(OP, x, RandomFirst(4), UNetInput(), torch.Generator().manual_seed(seed))
    return x, acq


def test_rounds_never_reselect_and_return_exactly_the_budget():
    x, acq = batch()
    for rounds in (2, 3, 7):
        policy = FlowPolicy(flow_model(), OP.n_locations, steps=3, rounds=rounds, condition_fn=UNetInput(), operator=OP)
        assert policy.sequential
        for budget in (1, 6, 13):
            mask = policy.propose(acq.condition(), budget, acq.acquired, torch.Generator().manual_seed(0),
                                  observe=acq.observe)
            assert bool(mask[acq.acquired].all())  # the first measurement is kept
            assert ((mask & ~acq.acquired).sum(1) == budget).all()  # exactly the budget, no location twice


def test_each_round_is_conditioned_on_the_previous_rounds_measurements():
    x, acq = batch()
    seen = []

    class Recording(UNetInput):
        def __call__(self, operator, zero_filled, acquired):
            seen.append((zero_filled.clone(), acquired.clone()))
            return super().__call__(operator, zero_filled, acquired)

    policy = FlowPolicy(flow_model(), OP.n_locations, steps=3, rounds=3, condition_fn=Recording(), operator=OP)
    mask = policy.propose(acq.condition(), 9, acq.acquired, torch.Generator().manual_seed(0), observe=acq.observe)
    assert [int(a.sum(1)[0]) for _, a in seen] == [4 + 3, 4 + 6]  # rounds 1 and 2 see 3 and 6 new locations
    for zf, acquired in seen:
        assert torch.equal(zf, x * OP.mask_to_image(acquired))  # exactly what was measured so far
        assert bool((acquired <= mask).all())
    assert bool((seen[0][1] <= seen[1][1]).all())


def test_one_round_is_the_one_shot_policy():
    x, acq = batch()
    model = flow_model()
    one_shot = FlowPolicy(model, OP.n_locations, steps=4)
    one_round = FlowPolicy(model, OP.n_locations, steps=4, rounds=1, condition_fn=UNetInput(), operator=OP)
    for budget in (3, 10):
        a = one_shot.propose(acq.condition(), budget, acq.acquired, torch.Generator().manual_seed(2))
        b = one_round.propose(acq.condition(), budget, acq.acquired, torch.Generator().manual_seed(2),
                              observe=acq.observe)
        assert torch.equal(a, b)
    with pytest.raises(Exception, match="condition builder"):
        FlowPolicy(model, OP.n_locations, rounds=2)


def test_training_rolls_out_earlier_rounds_and_trains_the_drawn_one():
    x, acq = batch(8)
    task = ClassificationTask(MLPClassifier(64, (16,), 10, 0.0)).freeze()
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(3))
    model = flow_model()
    target = TargetEstimator("saliency", task, OP)
    obj = FlowTaskObjective(model, task, OP, target, loss="both", rounds=3, rollout_steps=2)
    out = obj(x, y, acq.condition(), acq.acquired, 9, torch.Generator().manual_seed(5), acquisition=acq)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.velocity.parameters())
    with pytest.raises(Exception, match="acquisition"):
        obj(x, y, acq.condition(), acq.acquired, 9, torch.Generator().manual_seed(5))


def test_self_improvement_target_is_never_worse_than_its_proposals():
    x, acq = batch(6)
    task = ReconstructionTask(ReconUNet(2, 1, (4, 8, 8), 8)).freeze()
    model = flow_model()
    est = TargetEstimator("self", task, OP, r=5)
    obj = FlowTaskObjective(model, task, OP, est, loss="both")
    gen = torch.Generator().manual_seed(7)
    proposals = obj._proposals(acq.condition(), acq.acquired, 10, gen)
    assert len(proposals) == 5 and all(((p & ~acq.acquired).sum(1) == 10).all() for p in proposals)
    chosen = est(x, x, 10, acq.acquired, gen, proposals)
    loss_chosen = est.task_loss(x, x, chosen.float())
    for p in proposals:
        assert bool((loss_chosen <= est.task_loss(x, x, (acq.acquired | p).float()) + 1e-12).all())
    assert torch.equal(chosen | acq.acquired, chosen)


def test_greedy_ranking_gives_the_target_of_every_round():
    x, acq = batch(4)
    task = ReconstructionTask(ReconUNet(2, 1, (4, 8, 8), 8)).freeze()
    for kind, chunks in (("saliency", 1), ("greedy", 4)):
        est = TargetEstimator(kind, task, OP, chunks=chunks)
        rank = est.ranking(x, x, 12, acq.acquired, chunks)
        assert torch.equal(est(x, x, 12, acq.acquired, None), acq.acquired | select_topk(-rank, 12, acq.acquired))
        free = ~acq.acquired
        for i in range(4):  # a strict order of every free location
            assert sorted(rank[i][free[i]].tolist()) == [float(v) for v in range(int(free[i].sum()))]
    # one chunk of greedy is saliency
    sal = TargetEstimator("saliency", task, OP)(x, x, 12, acq.acquired, None)
    assert torch.equal(sal, TargetEstimator("greedy", task, OP, chunks=1)(x, x, 12, acq.acquired, None))
    assert split_budget(12, 5) == [3, 3, 2, 2, 2]


def test_validation_and_test_splits_are_disjoint():
    train, val = train_val_split(60000, 5000)
    assert len(set(train.tolist()) & set(val.tolist())) == 0 and len(train) + len(val) == 60000
    assert {_shared_split(i) for i in (1, 8500)} == {"train"} and {_shared_split(i) for i in (8501, 9000)} == {"val"}
    assert _shared_split(9001) == "test"
    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED / 'mnist'}")
    from flowcs.data import load_mnist_split

    tr = load_mnist_split(SHARED / "mnist", "train")
    va = load_mnist_split(SHARED / "mnist", "val")
    assert len(tr) == 55000 and len(va) == 5000
    flat_tr = {bytes(t.numpy().tobytes()) for t in tr.images[:5000]}
    assert not any(bytes(v.numpy().tobytes()) in flat_tr for v in va.images[:1000])  # not the same images


def test_ablation_grid_covers_rounds_targets_losses_and_prior_rows_change_only_the_prior():
    from flowcs.experiments.ablation import AblationConfig, ablation_variants

    a = AblationConfig(gates=[[30, 1]], rounds=[1, 4], targets=["saliency", "self", "none"], losses=["task", "both"])
    labels = [lab for lab, _ in ablation_variants(a)]
    assert labels[0] == "gate a=30 b=1" and len(labels) == 1 + 2 * (2 * 2 + 1) + 2  # 'none' only with task loss
    assert "rounds=4 target=self loss=both" in labels and "rounds=1 target=none loss=both" not in labels
    # every row with the FM term has a target, whatever the main setting's target (mnist-classify's is none)
    assert all(ch.get("target") not in (None, "none") for _, ch in ablation_variants(a) if ch.get("loss") == "both")
    assert labels[-2:] == ["objective=joint rounds=1 target=none loss=task", "objective=joint rounds=4 target=none "
                                                                            "loss=task"]
    mri = AblationConfig(gates=[], rounds=[1], targets=["greedy"], losses=["both"], priors=[0.5, 2.0], joint=False)
    variants = dict(ablation_variants(mri))
    # grid rows are gate rows whatever the main objective (a joint main setting would refuse loss=both)
    assert variants == {"rounds=1 target=greedy loss=both center_prior=0": {"objective": "gate", "rounds": 1,
                                                                             "target": "greedy", "loss": "both",
                                                                             "center_prior": 0.0},
                        "center_prior=0.5": {"center_prior": 0.5}, "center_prior=2": {"center_prior": 2.0}}
