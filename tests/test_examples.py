"""The two worked examples under examples/, run at smoke size through the real CLI, and the plug-in registry.

Each example is a plug-in package found through ``$FLOWCS_PLUGINS`` (as a user without ``pip install`` would
do); their metrics are checked, not just their existence.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from flowcs import registry
from flowcs.errors import ConfigError
from flowcs.experiments import get_experiment

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def run_example(folder: str, plugin: str, experiment: str, run_dir: Path, data: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES / folder), os.environ.get("PYTHONPATH", "")]),
           "FLOWCS_PLUGINS": plugin, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "flowcs", "run", experiment, "--smoke", "--config",
           str(EXAMPLES / folder / "config.yaml"), "--run-dir", str(run_dir), "--data", str(data), "--threads", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "results" / "metrics.json").read_text())


def _finite(rows: dict) -> bool:
    return all(math.isfinite(v) for r in rows.values() for v in r["mean"])


@pytest.mark.slow
def test_kspace_points_example_flow_beats_random(tmp_path):
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED_DATA / 'mnist'}")
    m = run_example("kspace_points", "kspace_points", "kspace-points", tmp_path / "run", SHARED_DATA)
    assert m["experiment"] == "kspace-points" and m["metric"] == "nmse" and m["higher_is_better"] is False
    assert m["budgets"] == [5, 10, 20, 30]  # from the example's config.yaml, merged over the smoke preset
    assert set(m["policies"]) == {"flow", "random"} and _finite(m["policies"])
    assert m["n_locations"] == 14 * 14 and m["test_images"] == 200
    flow, rand = m["policies"]["flow"]["mean"], m["policies"]["random"]["mean"]
    # more k-space points never hurt a zero-filled reconstruction, and the learned points beat random ones
    assert all(a > b for a, b in zip(flow, flow[1:])), flow
    assert all(f < r for f, r in zip(flow, rand)), (flow, rand)
    assert flow[-1] < 0.85 * rand[-1], (flow, rand)
    res = tmp_path / "run" / "results"
    assert (res / "density.png").stat().st_size > 1000 and (res / "nmse_vs_budget.png").is_file()
    assert json.loads((res / "run.json").read_text())["config"]["geometry"] == "kspace-points"


@pytest.mark.slow
def test_own_network_example_trains_and_the_flow_policy_helps(tmp_path):
    phantom = SHARED_DATA / "phantom_skimage" / "phantom.png"
    if not phantom.is_file():
        pytest.skip(f"real data file absent: {phantom}")
    m = run_example("mri_own_network", "own_recon", "own-recon-mri", tmp_path / "run", SHARED_DATA)
    assert m["experiment"] == "own-recon-mri" and m["metric"] == "psnr" and m["budget_unit"] == "lines"
    assert m["budgets"] == [2, 4, 8] and m["band_lines"] == 4 and m["test_images"] == 96
    net, zf = m["policies"], m["extra_metrics"]["psnr_zero_filled"]
    assert _finite(net) and _finite(zf)
    # the user's network is what scores the masks (its PSNR differs from zero filling's on the same masks) and
    # it is sane (at smoke size it barely trains: within 0.5 dB of zero filling, never far below it)
    for name in ("flow", "random"):
        diffs = [a - b for a, b in zip(net[name]["mean"], zf[name]["mean"])]
        assert any(abs(d) > 1e-4 for d in diffs) and all(d > -0.5 for d in diffs), (name, diffs)
    # more lines, better images; the flow policy is better than random on average over the budgets
    assert all(a < b for a, b in zip(net["flow"]["mean"], net["flow"]["mean"][1:]))
    margins = m["margins"]["flow_vs_random"]
    assert sum(margins) / len(margins) > 0.0, margins
    assert (tmp_path / "run" / "network.pt").is_file() and (tmp_path / "run" / "flow.pt").is_file()


# ----------------------------------------------------------------------------- the registry


@pytest.fixture
def plugin_path(monkeypatch):
    for folder in ("kspace_points", "mri_own_network"):
        monkeypatch.syspath_prepend(str(EXAMPLES / folder))
    saved = {k: dict(v) for k, v in registry._REGISTRY.items()}
    yield
    for k, v in saved.items():
        registry._REGISTRY[k].clear()
        registry._REGISTRY[k].update(v)


def test_plugin_env_registers_operator_task_and_experiment(plugin_path, monkeypatch):
    monkeypatch.setenv("FLOWCS_PLUGINS", "kspace_points, own_recon")
    from kspace_points import KSpacePointOperator
    from own_recon import OwnReconTask

    assert registry.get_operator("kspace-points") is KSpacePointOperator
    assert registry.get_task("own-recon") is OwnReconTask
    assert {"kspace-points", "own-recon-mri"} <= set(registry.available("experiment"))
    exp = get_experiment("kspace-points")
    assert exp.name == "kspace-points" and exp.stages == ("flow",)
    # built-in names resolve lazily to the flowcs classes
    from flowcs.operators import KSpaceLineOperator
    from flowcs.policies import RandomPolicy

    assert registry.get_operator("kspace-lines") is KSpaceLineOperator
    assert registry.get_policy("random") is RandomPolicy


def test_point_operator_is_linear_adjoint_and_a_projection(plugin_path):
    from kspace_points.geometry import KSpacePointOperator

    op = KSpacePointOperator(6, 5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 6, 5, generator=g, dtype=torch.float64)
    y = torch.randn(3, 2, 6, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(3, op.n_locations, generator=g) < 0.4
    lhs = (op.measure(x, mask) * y).sum()
    rhs = (x * op.adjoint(y, mask)).sum()
    assert torch.allclose(lhs, rhs)
    p = op.adjoint(op.measure(x, mask), mask)
    assert torch.allclose(op.adjoint(op.measure(p, mask), mask), p)
    full = torch.ones(3, op.n_locations, dtype=torch.bool)
    assert torch.allclose(op.zero_filled(op.measure(x, full), full), x)
    with pytest.raises(ConfigError, match=r"expected a mask of shape \(3, 30\)"):
        op.measure(x, mask[:, :7])


def test_register_conflicts_and_unknown_names_are_one_line_errors(plugin_path):
    registry.register_experiment("my-exp", "my_pkg.my_exp")
    registry.register_experiment("my-exp", "my_pkg.my_exp")  # same target twice: fine
    with pytest.raises(ConfigError, match="already registered"):
        registry.register_experiment("my-exp", "other.module")
    with pytest.raises(ConfigError, match="without spaces"):
        registry.register_operator("bad name", object)
    with pytest.raises(ConfigError, match="unknown operator 'nope'.*kspace-lines"):
        registry.get_operator("nope")
    registry.register_operator("not-an-operator", dict)
    with pytest.raises(ConfigError, match="not a subclass of Operator"):
        registry.get_operator("not-an-operator")
    with pytest.raises(ConfigError, match="cannot import its module 'my_pkg.my_exp'"):
        get_experiment("my-exp")
    with pytest.raises(ConfigError, match="plug-in module 'no_such_plugin_xyz' not found"):
        registry.import_plugin("no_such_plugin_xyz")


def test_incomplete_experiment_module_is_refused(plugin_path, monkeypatch):
    mod = ModuleType("half_experiment")
    mod.Config, mod.SMOKE = object, {}
    monkeypatch.setitem(sys.modules, "half_experiment", mod)
    registry.register_experiment("half", "half_experiment")
    with pytest.raises(ConfigError, match="does not define STAGES, validate, train, evaluate"):
        get_experiment("half")


def test_entry_points_are_discovered_without_replacing_builtins(plugin_path, monkeypatch):
    fake = {
        "flowcs.experiments": [SimpleNamespace(name="kspace-points", value="kspace_points.experiment:EXPERIMENT"),
                               SimpleNamespace(name="mnist-classify", value="evil.module")],
        "flowcs.operators": [SimpleNamespace(name="kspace-points", value="kspace_points.geometry:KSpacePointOperator")],
    }
    monkeypatch.setattr(registry, "_entry_points", lambda group: fake.get(group, []))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.delenv("FLOWCS_PLUGINS", raising=False)
    registry._REGISTRY["operator"].pop("kspace-points", None)
    registry._REGISTRY["experiment"].pop("kspace-points", None)
    assert get_experiment("kspace-points").name == "kspace-points"
    assert registry._REGISTRY["experiment"]["mnist-classify"] == "flowcs.experiments.classify:EXPERIMENT"
    from kspace_points.geometry import KSpacePointOperator

    assert registry.get_operator("kspace-points") is KSpacePointOperator
