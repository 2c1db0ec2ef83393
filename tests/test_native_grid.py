"""Masks on the acquisition's own phase-encode grid: the grid rule, `flowcs mri mask` on single-coil, multi-coil and
ISMRMRD files and folders, and FlowMaskFunc's fastMRI MaskFunc contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from flowcs.data.synthetic import write_fastmri_volume, write_synthetic_dataset
from flowcs.errors import ConfigError
from flowcs.experiments import mri_mask
from flowcs.experiments.context import load_run
from flowcs.experiments.mri.native import NativeMasker
from flowcs.operators.kspace import low_frequency_band
from flowcs.operators.line_grid import model_columns, native_budget, to_native
from flowcs.pipeline import FlowMaskFunc, seed_to_int
from flowcs.policies.base import ScorePolicy

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the grid rule


@pytest.mark.parametrize("cols", [96, 127, 128, 137, 168, 192, 256, 368, 372])
@pytest.mark.parametrize("acceleration", [4.0, 8.0])
def test_native_masks_have_exactly_the_budget_and_a_contiguous_lf_band(cols, acceleration):
    size, lf_fraction = 128, 0.08 if acceleration == 4 else 0.04
    total, lf = native_budget(cols, acceleration, lf_fraction)
    assert total == int(np.floor(cols / acceleration + 0.5))
    band = lf.nonzero().flatten()
    assert band.numel() == max(1, round(lf_fraction * cols)) and cols // 2 in band.tolist()
    assert (band.diff() == 1).all()  # contiguous
    g = torch.Generator().manual_seed(cols)
    model = torch.rand(5, size, generator=g) < 0.25
    native = to_native(model, cols, total, lf)
    assert native.shape == (5, cols) and (native.sum(1) == total).all()
    assert (native[:, lf]).all()


def test_native_mask_follows_the_chosen_frequencies():
    size, cols = 128, 368
    total, lf = native_budget(cols, 4.0, 0.08)
    model = low_frequency_band(size, 0.08).clone()
    model[[10, 100, 120]] = True
    native = to_native(model[None], cols, total, lf)[0]
    cover = model_columns(cols, size)
    # every native column covered by a chosen model line is taken while the budget lasts (here it lasts)
    assert int(model[cover].sum()) <= total
    assert native[model[cover]].all()
    # the DC column maps onto the DC column; the model grid's edges onto the native edges
    assert cover[cols // 2] == size // 2 and cover[0] == 0 and cover[-1] == size - 1
    # same grid, same LF band: the rule returns the model's own mask
    t, lf_same = native_budget(size, 4.0, 0.08)
    same = low_frequency_band(size, 0.08).clone()
    same[torch.arange(0, size, 6)] = True
    same_mask = same.clone()
    extra = (~same_mask).nonzero().flatten()[: t - int(same_mask.sum())]
    same_mask[extra] = True
    assert torch.equal(to_native(same_mask[None], size, t, lf_same)[0], same_mask)


def test_the_cli_lists_the_policies_the_masker_knows():
    from flowcs.experiments.mri.native import POLICIES

    assert mri_mask.POLICIES == POLICIES  # the parser keeps its own copy to stay import-light


def test_native_budget_equals_the_model_grids_budget_on_the_model_width():
    from flowcs.experiments.mri.config import line_budget

    for cols in range(24, 400, 7):  # every width and acceleration step of 0.1 (an LF band of 1 line always fits)
        for acceleration in np.arange(1.0, 12.0, 0.1).round(1).tolist():
            assert native_budget(cols, acceleration, 0.01)[0] == line_budget(cols, acceleration, 0.01)[0]
    assert native_budget(66, 8.8, 0.02)[0] == line_budget(66, 8.8, 0.02)[0] == 7  # float32 rounding gave 8


def test_a_budget_below_the_lf_band_is_refused():
    with pytest.raises(ConfigError, match="fewer than the"):
        native_budget(128, 30.0, 0.08)


# ----------------------------------------------------------------------------- with a trained (smoke) run


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("fastmri")
    write_synthetic_dataset(data, 5, n_slices=3, rows=160, cols=136, seed=0)
    run_dir = tmp_path_factory.mktemp("mri-smoke")
    proc = subprocess.run([sys.executable, "-m", "flowcs", "run", "mri-4x", "--smoke", "--run-dir", str(run_dir),
                           "--device", "cpu", "--set", "data.source=fastmri", "--set", f"data.fastmri_dir={data}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def multicoil_volume(path: Path, n_slices=3, coils=4, rows=160, cols=151, seed=0) -> Path:
    single = write_fastmri_volume(path.with_name("single_" + path.name), n_slices=n_slices, rows=rows, cols=cols,
                                  seed=seed)
    k = np.array(h5py.File(single, "r")["kspace"])
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal(coils) + 1j * rng.standard_normal(coils)).astype(np.complex64)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k[:, None] * weights[None, :, None, None])
    return path


def test_mri_mask_on_multicoil_and_ismrmrd_files_and_a_folder(smoke_run, tmp_path, capsys):
    out = tmp_path / "multi.json"
    vol = multicoil_volume(tmp_path / "multi.h5", cols=151)
    assert mri_mask.main(["mri", "mask", str(vol), "--run-dir", str(smoke_run), "--out", str(out),
                          "--acceleration", "4"]) == 0
    got = json.loads(out.read_text())
    assert got["format"] == "fastmri-multicoil" and got["coils"] == 4 and got["columns"] == 151
    assert got["lines_per_slice"] == 38 and got["effective_acceleration"] == round(151 / 38, 4)
    lf = set(got["low_frequency_lines"])
    assert len(lf) == 12 and 75 in lf
    for s in got["slices"]:
        assert len(s["lines"]) == 38 == len(set(s["lines"])) and lf <= set(s["lines"])
        assert all(0 <= c < 151 for c in s["lines"])
    assert "effective acceleration 3.97x" in capsys.readouterr().out
    ismrmrd = pytest.importorskip("ismrmrd", reason="the 'ismrmrd' extra is not installed")
    assert ismrmrd
    from flowcs.data.ismrmrd_raw import write_ismrmrd

    raw = write_ismrmrd(tmp_path / "raw.h5", np.array(h5py.File(vol, "r")["kspace"]))
    out2 = tmp_path / "raw.json"
    assert mri_mask.main(["mri", "mask", str(raw), "--run-dir", str(smoke_run), "--out", str(out2),
                          "--acceleration", "4"]) == 0
    got2 = json.loads(out2.read_text())
    assert got2["format"] == "ismrmrd" and got2["slices"] == got["slices"]  # same k-space, same lines
    folder = tmp_path / "in"
    folder.mkdir()
    for name, cols in (("a.h5", 136), ("b.h5", 137), ("c.h5", 192)):  # several widths in one run
        write_fastmri_volume(folder / name, n_slices=2, rows=160, cols=cols, seed=cols)
    outdir = tmp_path / "out"
    assert mri_mask.main(["mri", "mask", str(folder), "--run-dir", str(smoke_run), "--out", str(outdir),
                          "--format", "npy"]) == 0
    for name, cols in (("a", 136), ("b", 137), ("c", 192)):
        m = np.load(outdir / f"{name}.npy")
        assert m.shape == (2, cols) and (m.sum(1) == int(np.floor(cols / 4 + 0.5))).all()


def test_mri_mask_bad_paths_are_one_line_errors(smoke_run, tmp_path, capsys):
    mat = tmp_path / "scan.mat"
    import scipy.io

    scipy.io.savemat(mat, {"DATA": np.ones((4, 4))})
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, out, fragment in ((mat, tmp_path / "x.json", "MATLAB .mat file"),
                                (empty, tmp_path / "o", "no .h5 files"),
                                (empty, tmp_path / "o.json", "an output folder")):
        assert mri_mask.main(["mri", "mask", str(path), "--run-dir", str(smoke_run), "--out", str(out)]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("flowcs: error:") and fragment in err[-1], err
        assert not out.exists()


class EnergyPolicy(ScorePolicy):
    """An obviously adaptive stand-in for a trained flow: scores = column energy of the condition."""

    name = "energy"
    adaptive = True

    def scores(self, condition, acquired, generator=None):
        return torch.nn.functional.interpolate(condition.mean(2), size=self.n_locations, mode="linear")[:, 0]


def test_flow_mask_func_honours_the_fastmri_contract(smoke_run, tmp_path):
    vol = write_fastmri_volume(tmp_path / "v.h5", n_slices=3, rows=160, cols=137, seed=7)
    out = tmp_path / "lines.json"
    assert mri_mask.main(["mri", "mask", str(vol), "--run-dir", str(smoke_run), "--out", str(out),
                          "--seed", "3", "--slices", "all"]) == 0
    expected = json.loads(out.read_text())
    flow = FlowMaskFunc(smoke_run)
    kspace = np.array(h5py.File(vol, "r")["kspace"])
    for s in range(3):
        mask_func = flow.bind(kspace[s])
        real_view = torch.view_as_real(torch.from_numpy(kspace[s]))  # fastMRI's (rows, cols, 2)
        mask, n_lf = mask_func(real_view.shape, offset=None, seed=3)
        assert mask.shape == (1, 137, 1) and mask.dtype == torch.float32 and n_lf == 11
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert mask.flatten().nonzero().flatten().tolist() == expected["slices"][s]["lines"]
        assert (real_view * mask).shape == real_view.shape  # broadcasts like fastMRI's apply_mask
        mc, _ = mask_func((4, 160, 137, 2), seed=3)  # multi-coil shape: (1, 1, cols, 1)
        assert mc.shape == (1, 1, 137, 1) and torch.equal(mc.flatten(), mask.flatten())
    # the bound function is deterministic per seed; fastMRI's tuple seeds are accepted
    a = flow.bind(kspace[0])
    assert torch.equal(a((160, 137, 2), seed=(102, 105))[0], a((160, 137, 2), seed=(102, 105))[0])
    assert seed_to_int((102, 105)) == seed_to_int([102, 105]) != seed_to_int((105, 102))
    with pytest.raises(ConfigError, match="136 columns; the bound k-space has 137"):
        a((160, 136, 2), seed=0)
    with pytest.raises(ConfigError, match=r"real view \(…, rows, cols, 2\)"):  # a complex tensor's shape
        a((4, 160, 137), seed=0)


def test_two_volumes_with_the_same_shape_and_seed_get_different_masks(smoke_run, tmp_path):
    """What makes the mask function adaptive: the mask depends on the bound data, not only on (shape, seed)."""
    flow = FlowMaskFunc(smoke_run)
    flow.masker.policy = EnergyPolicy(flow.masker.size)
    a = np.array(h5py.File(write_fastmri_volume(tmp_path / "a.h5", n_slices=1, rows=160, cols=137, seed=1),
                           "r")["kspace"])[0]
    b = np.array(h5py.File(write_fastmri_volume(tmp_path / "b.h5", n_slices=1, rows=160, cols=137, seed=2),
                           "r")["kspace"])[0]
    b = b * np.exp(1j * np.linspace(0, 6, 137))[None].astype(np.complex64)  # shift the image: other energy
    ma, na = flow.bind(a)((160, 137, 2), seed=0)
    mb, nb = flow.bind(b)((160, 137, 2), seed=0)
    assert na == nb and ma.sum() == mb.sum() == 34
    assert not torch.equal(ma, mb)
    # a non-adaptive policy gives both volumes the same mask for the same seed
    ctx = load_run(smoke_run, "cpu", experiments=("mri-4x",))
    fixed = NativeMasker(ctx, "random")
    ra = fixed.masks(np.fft.fftshift(np.fft.ifft2(a))[None], seed=0).native
    rb = fixed.masks(np.fft.fftshift(np.fft.ifft2(b))[None], seed=0).native
    assert torch.equal(ra, rb)


def test_mri_evaluate_end_to_end_on_the_real_multicoil_brain(smoke_run, brain_multicoil, tmp_path, capsys):
    """The real 8-coil brain in fastMRI's multi-coil layout: native masks (168 columns), MoDL, metrics vs RSS."""
    out = tmp_path / "native.json"
    assert mri_mask.main(["mri", "evaluate", str(brain_multicoil), "--run-dir", str(smoke_run), "--out", str(out),
                          "--seeds", "2"]) == 0
    got = json.loads(out.read_text())
    assert got["images"] == [{"name": "brain_multicoil.h5#slice0", "rows": 320, "columns": 168, "lines": 42}]
    pol = got["policies"]
    assert set(pol) == {"flow", "low-frequency", "equispaced", "random", "full"}
    for name, r in pol.items():
        assert 0 < r["ssim"]["mean"] <= 1 and 0 < r["ssim_rss"]["mean"] <= 1, name
    # all lines through MoDL's data consistency reproduce the virtual coil; against RSS only the shading differs
    assert pol["full"]["ssim"]["mean"] > 0.97 and pol["full"]["ssim_rss"]["mean"] > 0.8
    assert pol["full"]["psnr"]["mean"] > pol["low-frequency"]["psnr"]["mean"]
    md = (tmp_path / "native.md").read_text()
    assert "SSIM vs RSS" in md and "brain_multicoil.h5#slice0 | 168 | 42 |" in md
    assert "SSIM flow" in capsys.readouterr().out


def test_strict_wins_count_ties_apart():
    from flowcs.experiments.mri.native_eval import strict_wins

    assert strict_wins([0.5, 0.6 + 1e-9, 0.7], [0.5, 0.6, 0.6]) == (1, 2)


def test_mri_mask_without_run_dir_uses_the_shipped_policy(tmp_path, brain_multicoil, capsys):
    """Right after installation: the pretrained mri-8x policy, on a single- and a multi-coil file."""
    from flowcs.pretrained import available, path, provenance

    assert "mri-8x" in available()
    prov = provenance()
    assert prov["experiment"] == "mri-8x" and not prov["git_commit"].endswith("-dirty")
    assert prov["validation"]["split"] == "val" and 0 < prov["validation"]["ssim"] <= 1
    assert prov["training_data"]["images"] > 0 and "brain_alias_8ch.mat" not in prov["training_data"]["volumes"]
    single = write_fastmri_volume(tmp_path / "single.h5", n_slices=3, rows=160, cols=137, seed=4)
    for vol, cols in ((single, 137), (brain_multicoil, 168)):
        out = tmp_path / f"{vol.stem}.json"
        assert mri_mask.main(["mri", "mask", str(vol), "--acceleration", "8", "--out", str(out)]) == 0
        got = json.loads(out.read_text())
        total = int(np.floor(cols / 8 + 0.5))
        assert got["columns"] == cols and got["lines_per_slice"] == total
        assert all(len(s["lines"]) == total for s in got["slices"])
        assert got["pretrained"]["git_commit"] == prov["git_commit"] and got["run_dir"] == str(path())
        captured = capsys.readouterr()
        assert f"effective acceleration {cols / total:.2f}x on the file's grid" in captured.out
        assert "pretrained mri-8x policy" in captured.err


def test_training_and_evaluation_read_a_folder_of_multicoil_volumes(tmp_path):
    folder = tmp_path / "multi"
    folder.mkdir()
    for i in range(5):
        multicoil_volume(folder / f"vol{i}.h5", n_slices=2, coils=3, rows=160, cols=136, seed=i)
    for f in folder.glob("single_*"):
        f.unlink()
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "flowcs", "run", "mri-4x", "--smoke", "--run-dir", str(run_dir),
                           "--device", "cpu", "--set", "data.source=fastmri", "--set", f"data.fastmri_dir={folder}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run_dir / "results" / "metrics.json").read_text())
    assert "virtual coil" in m["data"]["note"] and m["policies"]["full"]["mean"][0] > 0.9
    splits = json.loads((run_dir / "data_sources.json").read_text())
    vols = [set(splits[s]["volumes"]) for s in ("train", "val", "test")]
    assert all(vols) and not (vols[0] & vols[2]) and not (vols[1] & vols[2])  # split by volume


def test_the_pipeline_page_example_runs(tmp_path):
    """docs/pipeline.md's code block, run as a user would, on a fastMRI single-coil file and a multi-coil one."""
    import re

    code = re.search(r"```python\n(.*?)```", (REPO / "docs" / "pipeline.md").read_text(), re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    single = write_fastmri_volume(tmp_path / "single.h5", n_slices=2, rows=160, cols=137, seed=5)
    multi = multicoil_volume(tmp_path / "multi.h5", n_slices=2, coils=3, rows=160, cols=150, seed=6)
    for vol, cols in ((single, 137), (multi, 150)):
        proc = subprocess.run([sys.executable, str(script), str(vol)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        total = int(np.floor(cols / 8 + 0.5))
        assert proc.stdout.count(f"{total} of {cols} lines") == 2, proc.stdout


def test_zero_padded_columns_are_reported(smoke_run, tmp_path, capsys):
    """fastMRI files often zero-pad k-space columns: lines chosen there measure nothing, and the user is told."""
    k = np.array(h5py.File(write_fastmri_volume(tmp_path / "v.h5", n_slices=1, rows=160, cols=136, seed=3),
                           "r")["kspace"])
    padded = k.copy()
    padded[:, :, :30] = 0
    padded[:, :, -30:] = 0
    vol = write_fastmri_volume(tmp_path / "padded.h5", kspace=padded)
    out = tmp_path / "p.json"
    assert mri_mask.main(["mri", "mask", str(vol), "--run-dir", str(smoke_run), "--out", str(out),
                          "--policy", "equispaced", "--acceleration", "2"]) == 0
    got = json.loads(out.read_text())
    assert got["empty_columns"] == 60
    wasted = got["slices"][0]["lines_on_empty_columns"]
    assert wasted == sum(c < 30 or c >= 106 for c in got["slices"][0]["lines"]) > 0
    assert f"{wasted} chosen line(s) fall on all-zero k-space columns" in capsys.readouterr().err
    hole = k.copy()
    hole[:, :, 68] = 0  # the DC column: the LF band is not contiguous in the data
    vol2 = write_fastmri_volume(tmp_path / "hole.h5", kspace=hole)
    assert mri_mask.main(["mri", "mask", str(vol2), "--run-dir", str(smoke_run), "--out", str(out)]) == 0
    assert "low-frequency band holds all-zero k-space columns" in capsys.readouterr().err


def test_sequential_rounds_observe_with_the_lf_normalisation(smoke_run, tmp_path):
    """What a sequential policy observes after round 0 is scaled like its LF condition (as in training: the image is
    normalised once by its LF peak), not renormalised to its own peak."""
    ctx = load_run(smoke_run, "cpu", experiments=("mri-4x",))
    masker = NativeMasker(ctx, "low-frequency")
    k = np.array(h5py.File(write_fastmri_volume(tmp_path / "v.h5", n_slices=1, rows=160, cols=137, seed=9),
                           "r")["kspace"])[0]
    image = torch.from_numpy(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k), norm="ortho")).astype(np.complex64))
    seen = {}

    class Probe:
        def propose(self, condition, budget, acquired, generator, observe):
            seen["condition"] = condition
            seen["all_lines"] = observe(torch.ones(1, masker.size, dtype=torch.bool))
            return acquired | (torch.arange(masker.size) < budget)[None]

    masker.policy = Probe()
    masker.masks(image[None], seed=0)
    _, lf = masker.budget(137)
    lf_image = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(torch.fft.fftshift(torch.fft.fft2(
        torch.fft.ifftshift(image), norm="ortho")) * lf), norm="ortho"))
    scale = masker.lf_scale(lf_image[None])
    lf_view = masker._model_view(lf_image[None], scale)
    assert lf_view.square().sum(1).sqrt().amax().item() == pytest.approx(1.0, abs=1e-5)  # the LF view peaks at 1
    torch.testing.assert_close(seen["condition"], masker.geometry.condition_fn()(None, lf_view, None))
    expected = masker._model_view(image[None], scale)
    torch.testing.assert_close(seen["all_lines"], expected, atol=1e-5, rtol=1e-4)
    assert seen["all_lines"].square().sum(1).sqrt().amax().item() > 1.0  # the full image is brighter than its LF part


def test_the_flow_prior_covers_the_maskers_budget_at_another_acceleration(smoke_run):
    """The centre prior is the block of the budget being sampled: a 4x run asked for 2x favours the 2x block."""
    ctx = load_run(smoke_run, "cpu", experiments=("mri-4x",))
    for acceleration in (None, 2.0):
        masker = NativeMasker(ctx, "flow", acceleration)
        prior = masker.policy.prior
        assert prior is not None and int((prior > 0).sum()) == masker.k  # the k most central free lines
        assert not (prior > 0)[masker.geometry.acquired(1)[0]].any()
    assert NativeMasker(ctx, "flow", 2.0).k > NativeMasker(ctx, "flow").k
