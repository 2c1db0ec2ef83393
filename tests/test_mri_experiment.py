"""MRI experiments end to end: a smoke run on synthetic fastMRI .h5 files, `mri mask`, configs and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from flowcs.data.synthetic import write_fastmri_volume, write_synthetic_dataset
from flowcs.errors import ConfigError
from flowcs.experiments import build_context, get_experiment, mri_mask
from flowcs.experiments.mri import POLICY_ORDER, line_budget

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "flowcs", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def assert_one_line_error(proc_or_err, *fragments, code=None):
    err = proc_or_err if isinstance(proc_or_err, str) else proc_or_err.stderr
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("flowcs: error:"), err
    for f in fragments:
        assert f in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fastmri")
    write_synthetic_dataset(folder, 5, n_slices=3, rows=160, cols=136, seed=0)
    return folder


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, synthetic_dir):
    run_dir = tmp_path_factory.mktemp("mri-smoke")
    proc = run_cli("run", "mri-4x", "--smoke", "--run-dir", str(run_dir), "--device", "cpu",
                   "--set", "data.source=fastmri", "--set", f"data.fastmri_dir={synthetic_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


def test_smoke_run_writes_the_results_schema(smoke_run):
    run_dir, _ = smoke_run
    res = run_dir / "results"
    m = json.loads((res / "metrics.json").read_text())
    assert m["experiment"] == "mri-4x" and m["metric"] == "ssim" and m["higher_is_better"] is True
    assert m["budget_unit"] == "acceleration" and m["budgets"] == [4.0]
    assert list(m["policies"]) == list(POLICY_ORDER)
    for name, row in m["policies"].items():
        assert len(row["mean"]) == 1 and 0 <= row["mean"][0] <= 1 and row["n"] == 3, name
    assert m["policies"]["full"]["mean"][0] > 0.95  # all lines through MoDL ≈ the ground truth
    assert set(m["extra_metrics"]) == {"psnr", "nmse"}
    assert m["per_volume"]["n_volumes"] == 1 and set(m["per_volume"]) >= {"ssim", "psnr", "nmse"}
    assert m["lines"] == {"columns": 128, "total": 32, "low_frequency": 10, "policy": 22, "lf_fraction": 0.08,
                          "lf_counts_inside_budget": True}
    assert m["data"]["source"] == "fastmri" and len(m["per_image"]["names"]) == 3
    run = json.loads((res / "run.json").read_text())
    assert {"config", "seed", "git_commit", "versions", "wall_time_s", "command"} <= set(run)
    for fig in ("reconstructions.png", "density.png", "flow_masks.png", "ssim.png"):
        assert (res / fig).stat().st_size > 1000, fig
    for stage in ("encoder", "modl-pretrain", "modl", "flow"):
        assert (run_dir / f"{stage}.pt").is_file()
    splits = json.loads((run_dir / "data_sources.json").read_text())
    vols = [set(splits[s]["volumes"]) for s in ("train", "val", "test")]
    assert not (vols[0] & vols[1]) and not (vols[0] & vols[2]) and not (vols[1] & vols[2])


def test_mri_mask_outputs_lines_per_slice(smoke_run, synthetic_dir, tmp_path, capsys):
    run_dir, _ = smoke_run
    vol = write_fastmri_volume(tmp_path / "file_new.h5", n_slices=25, rows=160, cols=136, seed=42)
    out = tmp_path / "lines.json"
    assert mri_mask.main(["mri", "mask", str(vol), "--acceleration", "4", "--run-dir", str(run_dir),
                          "--out", str(out)]) == 0
    lines = json.loads(out.read_text())
    # the budget and the LF band are counted on the file's own 136-column grid: round(136 / 4) = 34 lines
    assert lines["policy"] == "flow" and lines["lines_per_slice"] == 34 and lines["columns"] == 136
    assert lines["model_columns"] == 128 and lines["effective_acceleration"] == 4.0
    assert [s["slice"] for s in lines["slices"]] == list(range(2, 23))  # centre ± 10
    lf = set(lines["low_frequency_lines"])
    assert lf == set(range(63, 74))  # round(0.08 * 136) = 11 central columns, DC (68) inside
    for s in lines["slices"]:
        assert len(s["lines"]) == 34 == len(set(s["lines"])) and lf <= set(s["lines"])
        assert all(0 <= c < 136 for c in s["lines"])
        assert len(s["lines_model"]) == 32 and all(0 <= c < 128 for c in s["lines_model"])
    npy = tmp_path / "masks.npy"
    assert mri_mask.main(["mri", "mask", str(vol), "--run-dir", str(run_dir), "--out", str(npy),
                          "--policy", "equispaced", "--slices", "all"]) == 0
    masks = np.load(npy)
    assert masks.shape == (25, 136) and masks.dtype == bool and (masks.sum(1) == 34).all()
    assert "→" in capsys.readouterr().out


def test_mri_mask_bad_input_is_one_line_and_writes_nothing(smoke_run, tmp_path, capsys):
    run_dir, _ = smoke_run
    out = tmp_path / "lines.json"
    nokspace = tmp_path / "nokspace.h5"
    with h5py.File(nokspace, "w") as f:
        f.create_dataset("image", data=np.zeros((2, 8, 8)))
    good = write_fastmri_volume(tmp_path / "good.h5", n_slices=3, rows=160, cols=136, seed=1)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    k = np.array(h5py.File(good, "r")["kspace"])
    k[1, 5, 5] = np.nan
    nan = write_fastmri_volume(tmp_path / "nan.h5", kspace=k)
    cases = [(nokspace, [], "no 'kspace' dataset"), (truncated, [], "truncated or corrupt"),
             (nan, [], "NaN/Inf"), (good, ["--acceleration", "16"], "fewer than the 10-line low-frequency band")]
    for path, extra, fragment in cases:
        code = mri_mask.main(["mri", "mask", str(path), "--run-dir", str(run_dir), "--out", str(out), *extra])
        assert code != 0
        named = "128-column model grid" if extra else str(path)  # a too-high acceleration fails before any file
        assert_one_line_error(capsys.readouterr().err, named, fragment)
        assert not out.exists() and not list(tmp_path.glob(".lines.json.*"))
    code = mri_mask.main(["mri", "mask", str(good), "--run-dir", str(tmp_path), "--out", str(out)])
    assert code != 0 and "config.yaml" in capsys.readouterr().err
    # the same through the real CLI (`flowcs mri mask`): exit code, one line, nothing written
    proc = run_cli("mri", "mask", str(truncated), "--run-dir", str(run_dir), "--out", str(out))
    assert proc.returncode != 0
    assert_one_line_error(proc, str(truncated), "truncated or corrupt")
    assert not out.exists()


def test_acceleration_that_cannot_hold_the_lf_band_fails_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", "mri-4x", "--run-dir", str(run_dir), "--set", "mri.acceleration=16")
    assert proc.returncode != 0
    assert_one_line_error(proc, "acceleration 16x leaves 8 of 128 lines", "10-line low-frequency band")
    assert not run_dir.exists()


def test_line_budgets_of_the_two_experiments():
    assert line_budget(128, 4.0, 0.08) == (32, 10, 22)
    assert line_budget(208, 8.0, 0.04) == (26, 8, 18)
    with pytest.raises(ConfigError, match="fewer than the 8-line"):
        line_budget(208, 30.0, 0.04)
    with pytest.raises(ConfigError, match="must be a number >= 1"):
        line_budget(128, 0.5, 0.08)


def test_registry_presets_and_config_files_match_code_defaults():
    from flowcs.data.fastmri import SLICE_HALF_WIDTH

    assert mri_mask.SLICE_HALF_WIDTH == SLICE_HALF_WIDTH
    m4, m8 = get_experiment("mri-4x").default_config(), get_experiment("mri-8x").default_config()
    assert (m4.mri.size, m4.mri.acceleration, m4.mri.lf_fraction) == (128, 4.0, 0.08)
    assert (m8.mri.size, m8.mri.acceleration, m8.mri.lf_fraction) == (208, 8.0, 0.04)
    assert get_experiment("mri-4x").stages == get_experiment("mri-8x").stages == (
        "encoder", "modl-pretrain", "modl", "flow")
    with pytest.raises(ConfigError, match="data.source"):
        build_context("mri-4x", overrides=["data.source=dicom"], run_dir=str(REPO / "runs" / "never"),
                      data=str(REPO))
