"""The one evaluation loop: name-derived draws (no policy's numbers depend on another's), batch-size independence,
per-sample values for every row, the first measurement and noise shared by every policy."""

from __future__ import annotations

import torch
from torch import nn

from flowcs.acquisition import Acquisition, BandFirst, Magnitude, RandomFirst, UNetInput
from flowcs.evaluation import Entry, Setup, Split, evaluate
from flowcs.evaluation.draws import NamedDraws
from flowcs.metrics import mae
from flowcs.operators import KSpaceLineOperator, PixelOperator, low_frequency_band
from flowcs.policies import LOUPEPolicy, RandomPolicy
from flowcs.policies.cartesian import EquispacedPolicy, VariableDensityPolicy
from flowcs.rng import derive, rand_rows, row_generator
from flowcs.tasks.base import Task


class ZeroFilled(Task):
    """No model: the zero-filled image is the prediction (MAE against the image)."""

    metric = "mae"
    higher_is_better = False

    def __init__(self):
        super().__init__(nn.Identity())

    def predict(self, zero_filled, mask_image):
        return zero_filled

    def loss(self, pred, target, reduction="mean"):
        return (pred - target).abs().mean()

    def score(self, pred, target):
        return mae(pred, target)


def pixel_setup(n: int = 11) -> Setup:
    op = PixelOperator(1, 6, 6)
    x = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    task = ZeroFilled()
    return Setup("demo", op, task, RandomFirst(3), UNetInput(), Split(x, x), [2, 5], [2, 5], "pixels",
                 {"mae": lambda pred, y, rows: mae(pred, y)}, "mae", False)


def kspace_setup(n: int = 7) -> Setup:
    op = KSpaceLineOperator(16, 16, noise_pct=5.0)
    x = torch.randn(n, 2, 16, 16, generator=torch.Generator().manual_seed(4))
    task = ZeroFilled()
    band = low_frequency_band(16, 0.25)
    return Setup("demo-mri", op, task, BandFirst(band), Magnitude(), Split(x, x), [4], [2.0], "acceleration",
                 {"mae": lambda pred, y, rows: mae(pred, y)}, "mae", False, noisy=True)


def entries(names: list[str], n_locations: int) -> dict[str, Entry]:
    make = {"random": lambda: RandomPolicy(n_locations), "random-2": lambda: RandomPolicy(n_locations),
            "equispaced": lambda: EquispacedPolicy(n_locations),
            "variable-density": lambda: VariableDensityPolicy(n_locations),
            "loupe": lambda: LOUPEPolicy(n_locations, test_mode="sample", seed=1)}
    return {name: Entry(make[name]()) for name in names}


def rows_of(setup: Setup, names: list[str], batch_size: int = 4, seeds: int = 2):
    res = evaluate(setup, entries(names, setup.operator.n_locations), NamedDraws(5), seeds, batch_size, "cpu")
    return {name: {b: v for b, v in res.values["mae"][name].items()} for name in names}


def test_reordering_adding_or_removing_a_policy_changes_no_other_row():
    for setup in (pixel_setup(), kspace_setup()):
        base = rows_of(setup, ["random", "equispaced", "variable-density", "loupe"])
        others = [["loupe", "variable-density", "random", "equispaced"],  # reordered
                  ["random-2", "equispaced", "random", "variable-density", "loupe"],  # one added in front
                  ["variable-density", "random"]]  # two removed
        for names in others:
            got = rows_of(setup, names)
            for name in names:
                if name in base:
                    for b in base[name]:
                        assert torch.equal(got[name][b], base[name][b]), (setup.experiment, names, name)
        # and the draws are the policy's own: two random policies under different names differ
        pair = rows_of(setup, ["random", "random-2"])
        assert not torch.equal(pair["random"][setup.budgets[0]], pair["random-2"][setup.budgets[0]])


def test_values_do_not_depend_on_the_batch_size_and_seeds_differ():
    for setup in (pixel_setup(), kspace_setup()):
        a = rows_of(setup, ["random", "variable-density"], batch_size=3)
        b = rows_of(setup, ["random", "variable-density"], batch_size=100)
        for name in a:
            for budget in a[name]:
                assert a[name][budget].shape == (2, len(setup.test))
                assert torch.equal(a[name][budget], b[name][budget])
                assert not torch.equal(a[name][budget][0], a[name][budget][1])  # seed 0 vs seed 1


def test_every_policy_sees_the_same_first_measurement_and_noise():
    setup = pixel_setup()
    seen = {}

    def record(ev):
        seen[ev.name] = ev.acquired

    ent = entries(["random", "loupe"], setup.operator.n_locations)
    evaluate(setup, ent, NamedDraws(5), 1, 100, "cpu", on_masks=record)
    assert torch.equal(seen["random"], seen["loupe"]) and int(seen["random"].sum(1)[0]) == 3
    # the noise of the k-space experiment is drawn once per sample: observing the full mask twice is identical
    k = kspace_setup()
    bd = NamedDraws(5).batch(0, 0, 0, 3, 0, 3)
    acq = Acquisition.start(k.operator, k.test.x[:3], k.first, k.condition, bd.first, True, bd.noise)
    ones = torch.ones(3, 16, dtype=torch.bool)
    assert torch.equal(acq.observe(ones), acq.observe(ones))
    again = Acquisition.start(k.operator, k.test.x[:3], k.first, k.condition, None, True,
                              NamedDraws(5).batch(0, 0, 0, 3, 0, 3).noise)
    assert torch.equal(acq.y_full, again.y_full)
    assert not torch.equal(acq.y_full, k.operator.measure(k.test.x[:3], ones))  # it is noisy


def test_row_generators_and_derived_seeds():
    assert derive(0, 1, "flow") == derive(0, 1, "flow") != derive(0, 1, "random")
    assert derive(1, 0) != derive(0, 1) and derive("1") != derive(1)
    assert 0 <= derive(2**70, "x") < 2**63
    g = row_generator([derive(0, i) for i in range(4)])
    h = row_generator([derive(0, i) for i in (2, 3)])
    a, b = rand_rows(4, 5, generator=g), rand_rows(2, 5, generator=h)
    assert torch.equal(a[2:], b)  # a sample's draws do not depend on the batch it is in


def test_tables_name_the_metric_show_an_interval_for_one_seed_and_never_crown_the_oracle():
    from flowcs.evaluation.tables import format_cell, headline, markdown_table, spread

    rows = {"flow": {"mean": [0.50, 0.80], "std_seeds": [0.0, 0.0], "ci95": [[0.48, 0.52], [0.78, 0.82]]},
            "flow+ft": {"mean": [0.90, 0.95], "std_seeds": [0.01, 0.01], "ci95": [[0.8, 1.0], [0.9, 1.0]]},
            "adps": {"mean": [0.60, 0.70], "std_seeds": [0.02, 0.0], "ci95": [[0.5, 0.7], [0.69, 0.71]]},
            "full": {"mean": [0.99, 0.99], "std_seeds": [0.0, 0.0]}}
    payload = {"metric": "accuracy", "higher_is_better": True, "budget_unit": "percent", "budgets": [1.0, 4.0],
               "policies": rows}
    assert spread(rows["flow"], 0) == ("ci", 0.48, 0.52) and spread(rows["adps"], 0) == ("std", 0.02)
    assert spread(rows["full"], 0) == () and format_cell(rows["full"], 0, 100) == "99.00"
    assert format_cell(rows["flow"], 1, 100) == "80.00 [78.00, 82.00]"
    assert format_cell({"mean": [0.9], "std_images": [0.05]}, 0, 1, 3) == "0.900 ± 0.050"  # MRI: across images
    table = markdown_table(payload, 100)
    assert table.splitlines()[0] == "| policy — accuracy % (higher is better) | 1.0% | 4.0% |"
    assert "| flow | 50.00 [48.00, 52.00] | 80.00 [78.00, 82.00] |" in table and "± 0.00" not in table
    assert "| policy — mae (lower is better) |" in markdown_table({**payload, "metric": "psnr"}, 1, 2, "mae")
    best = headline(payload)  # our variants (flow+ft) and the oracle (full) are not "the best other policy"
    assert [(h["budget"], h["best_other"], h["ahead"]) for h in best] == [(1.0, "adps", False), (4.0, "adps", True)]
