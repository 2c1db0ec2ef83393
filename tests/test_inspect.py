"""``flowcs data inspect``: summaries of clean data, one line per problem, exit codes 0 / 1 / 2."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from flowcs.cli import main
from flowcs.data.inspect import KINDS, Report, inspect_path, register
from flowcs.data.mri_files import write_cfl
from flowcs.data.synthetic import write_fastmri_volume

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()


# ----------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray) -> Path:
    array = np.asarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def mnist_folder(folder: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """A tiny MNIST folder in the official layout (un-gzipped names: no md5 check applies)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return folder


def write_png(path: Path, h: int = 12, w: int = 10, mode: str = "RGB", seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


def run_inspect(path, capsys) -> tuple[int, list[str], str]:
    code = main(["data", "inspect", str(path)])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def problems(lines: list[str]) -> list[str]:
    return [ln.strip()[len("problem: "):] for ln in lines if ln.strip().startswith("problem: ")]


def small_volume(path: Path, seed: int = 0, **kw) -> Path:
    kw = {"n_slices": 3, "rows": 16, "cols": 12, **kw}
    return write_fastmri_volume(path, seed=seed, **kw)


# ----------------------------------------------------------------------------- MNIST


def test_clean_mnist_folder_prints_a_summary_and_exits_0(tmp_path, capsys):
    folder = mnist_folder(tmp_path / "mnist")
    (folder / "SOURCE.txt").write_text("where the files came from")
    code, lines, err = run_inspect(folder, capsys)
    assert code == 0 and err == ""
    assert lines[0] == f"{folder}: MNIST IDX, OK"
    text = "\n".join(lines)
    assert "train split: images shape (64, 28, 28), dtype uint8, values 0..255; labels 0..9 (10 classes); " \
           "images: official IDX train-images-idx3-ubyte (md5 not checked)" in text
    assert "test split: images shape (32, 28, 28)" in text
    assert "ignored 1 other file(s): SOURCE.txt" in text
    assert not problems(lines)


def test_mnist_problems_are_one_line_each_naming_the_file(tmp_path, capsys):
    folder = mnist_folder(tmp_path / "mnist")
    raw = (folder / "train-images-idx3-ubyte").read_bytes()
    (folder / "train-images-idx3-ubyte").write_bytes(raw[: len(raw) // 2])  # truncated
    lbl = bytearray((folder / "train-labels-idx1-ubyte").read_bytes())
    lbl[0] = 0x1F  # wrong magic number
    (folder / "train-labels-idx1-ubyte").write_bytes(bytes(lbl))
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(31))  # 31 labels for 32 images
    code, lines, _ = run_inspect(folder, capsys)
    assert code == 1
    assert lines[0] == f"{folder}: MNIST IDX, 3 problem(s)"
    found = problems(lines)
    assert len(found) == 3
    by_file = {p.split(":")[0]: p for p in found}
    assert "truncated IDX file" in by_file[str(folder / "train-images-idx3-ubyte")]
    assert "bad magic number" in by_file[str(folder / "train-labels-idx1-ubyte")]
    assert "31 labels but 32 images" in by_file[str(folder / "t10k-labels-idx1-ubyte")]


def test_mnist_folder_missing_a_split_says_which_files(tmp_path, capsys):
    folder = mnist_folder(tmp_path / "mnist")
    (folder / "train-images-idx3-ubyte").unlink()
    code, lines, _ = run_inspect(folder, capsys)
    assert code == 1
    (only,) = problems(lines)
    assert only.startswith(str(folder)) and "missing MNIST train file(s): train-images-idx3-ubyte.gz" in only


def test_single_idx_file_and_official_name_md5(tmp_path, capsys):
    f = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10))  # official name, other content
    code, lines, _ = run_inspect(f, capsys)
    assert code == 1
    (only,) = problems(lines)
    assert only.startswith(str(f)) and "differs from the official MNIST release" in only
    g = write_idx(tmp_path / "mine-labels-idx1-ubyte.gz", np.arange(10))
    code, lines, _ = run_inspect(g, capsys)
    assert code == 0 and "shape (10,), dtype uint8, values 0..9" in lines[1]


def test_npz_fallback_clean_and_corrupt(tmp_path, capsys):
    folder = mnist_folder(tmp_path / "mnist")
    (folder / "train-images-idx3-ubyte").unlink()
    rng = np.random.default_rng(1)
    npz = folder / "mnist_train_from_png_approx.npz"
    np.savez(npz, images=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), labels=rng.integers(0, 10, 64))
    code, lines, _ = run_inspect(folder, capsys)
    assert code == 0, lines
    assert any("approximate npz" in ln for ln in lines)
    npz.write_bytes(npz.read_bytes()[:200])
    code, lines, _ = run_inspect(folder, capsys)
    assert code == 1
    (only,) = problems(lines)
    assert only.startswith(str(npz)) and "corrupt or unreadable npz" in only


def test_real_mnist_folder_is_clean(capsys):
    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED / 'mnist'}")
    code, lines, _ = run_inspect(SHARED / "mnist", capsys)
    assert code == 0, lines
    assert "(md5 verified)" in "\n".join(lines) and "train split: images shape (60000, 28, 28)" in "\n".join(lines)


# ----------------------------------------------------------------------------- images


def test_image_folder_clean(tmp_path, capsys):
    for i in range(3):
        write_png(tmp_path / f"{i:06d}.png", seed=i)
    code, lines, _ = run_inspect(tmp_path, capsys)
    assert code == 0
    assert lines[0].endswith("image folder, OK")
    assert "3 RGB image(s), dtype uint8, size 12x10 ×3" in lines[1]


def test_image_folder_problems_one_line_per_file(tmp_path, capsys):
    write_png(tmp_path / "a.png")
    good = write_png(tmp_path / "b.jpg", seed=1)
    (tmp_path / "c.jpg").write_bytes(good.read_bytes()[:60])  # truncated JPEG
    write_png(tmp_path / "d.png", mode="L")  # greyscale, not RGB
    write_png(tmp_path / "e.png", h=14)  # another size
    code, lines, _ = run_inspect(tmp_path, capsys)
    assert code == 1
    found = problems(lines)
    assert len(found) == 3, found
    assert found[0].startswith(str(tmp_path / "c.jpg")) and "unreadable image" in found[0]
    assert found[1].startswith(str(tmp_path / "d.png")) and "not an RGB image" in found[1]
    assert found[2].startswith(str(tmp_path / "e.png")) and "mixed image sizes" in found[2]


def test_celeba_layout_with_a_missing_listed_image(tmp_path, capsys):
    images = tmp_path / "img_align_celeba"
    images.mkdir()
    for i in range(1, 4):
        write_png(images / f"{i:06d}.jpg", seed=i)
    (tmp_path / "list_eval_partition.txt").write_text(
        "000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n000004.jpg 2\n")
    code, lines, _ = run_inspect(tmp_path, capsys)
    assert code == 1
    assert lines[0].endswith("CelebA folder, 1 problem(s)")
    assert "4 images (train 1, val 1, test 2)" in "\n".join(lines)
    (only,) = problems(lines)
    assert only == f"{images / '000004.jpg'}: listed in list_eval_partition.txt but missing"


def test_empty_folder_and_folder_without_data(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, lines, _ = run_inspect(empty, capsys)
    assert code == 1 and problems(lines) == [f"{empty}: empty folder (no data files)"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.txt").write_text("x")
    code, lines, _ = run_inspect(docs, capsys)
    assert code == 1 and problems(lines) == [f"{docs}: no recognised data files (found: notes.txt)"]


# ----------------------------------------------------------------------------- fastMRI


def test_fastmri_folder_of_synthetic_volumes(tmp_path, capsys):
    small_volume(tmp_path / "file_a.h5", seed=0)
    small_volume(tmp_path / "file_b.h5", seed=1, n_slices=25, cols=14)
    code, lines, _ = run_inspect(tmp_path, capsys)
    assert code == 0
    text = "\n".join(lines)
    assert lines[0].endswith("fastMRI / ISMRMRD .h5, OK")
    assert "file_a.h5: 3 slices of single-coil 16x12 complex k-space" in text and "ISMRMRD header, synthetic" in text
    assert "2 volume(s) (2 synthetic), slices per volume 3..25 (total 28; the loader keeps the centre ±10: " \
           "24 slices), k-space 16x12, 16x14" in text


def test_fastmri_problems_one_line_per_file(tmp_path, capsys):
    small_volume(tmp_path / "ok.h5")
    with h5py.File(tmp_path / "no_kspace.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((2, 4, 4), np.float32))
    with h5py.File(tmp_path / "multicoil.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((2, 4, 8, 8), np.complex64))
        f.create_dataset("reconstruction_rss", data=np.zeros((3, 8, 8), np.float32))  # 3 slices, k-space has 2
    kspace = np.ones((3, 16, 12), np.complex64)
    kspace[1, 2, 3] = np.nan
    write_fastmri_volume(tmp_path / "nan.h5", kspace=kspace)
    raw = (tmp_path / "ok.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(raw[: len(raw) // 3])
    (tmp_path / "text.h5").write_text("not hdf5 at all")
    code, lines, _ = run_inspect(tmp_path, capsys)
    assert code == 1
    found = {p.split(":")[0]: p for p in problems(lines)}
    assert len(problems(lines)) == 5
    assert "no 'kspace' dataset" in found[str(tmp_path / "no_kspace.h5")]
    assert "'reconstruction_rss' has shape (3, 8, 8), expected (slices=2" in found[str(tmp_path / "multicoil.h5")]
    assert "k-space slice 1 contains 1 NaN/Inf value(s)" in found[str(tmp_path / "nan.h5")]
    assert "not a readable HDF5 file" in found[str(tmp_path / "truncated.h5")]
    assert "not a readable HDF5 file" in found[str(tmp_path / "text.h5")]
    assert "1 volume(s) (1 synthetic)" in "\n".join(lines)  # the good one is still summarised


def test_single_h5_file_with_wrong_rank(tmp_path, capsys):
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((16, 12), np.complex64))
    code, lines, _ = run_inspect(tmp_path / "flat.h5", capsys)
    assert code == 1
    (only,) = problems(lines)
    assert only.startswith(str(tmp_path / "flat.h5")) and "has rank 2" in only


# ----------------------------------------------------------------------------- .mat, .cfl, arrays


def test_kellman_mat_clean_and_truncated(tmp_path, capsys):
    src = SHARED / "mri_complex_kellman_fatwater" / "PKdata3.mat"
    if not src.is_file():
        pytest.skip(f"real data file absent: {src}")
    code, lines, _ = run_inspect(src, capsys)
    assert code == 0 and "Kellman fat-water, 3 echo image(s) of 256x192 complex64" in lines[1]
    bad = tmp_path / "PKdata3.mat"
    bad.write_bytes(src.read_bytes()[:5000])
    code, lines, _ = run_inspect(bad, capsys)
    assert code == 1
    (only,) = problems(lines)
    assert only.startswith(str(bad)) and "unreadable .mat file" in only


def test_bart_cfl_clean_truncated_and_nonfinite(tmp_path, capsys):
    write_cfl(tmp_path / "good", np.ones((4, 6), np.complex64))
    code, lines, _ = run_inspect(tmp_path, capsys)
    assert code == 0 and "good.cfl: dims (4, 6), complex64, |x| max 1" in lines[1]
    bad = np.ones((4, 6), np.complex64)
    bad[0, 0] = np.inf
    write_cfl(tmp_path / "inf", bad)
    write_cfl(tmp_path / "cut", np.ones((4, 6), np.complex64))
    (tmp_path / "cut.cfl").write_bytes((tmp_path / "cut.cfl").read_bytes()[:50])
    code, lines, _ = run_inspect(tmp_path, capsys)
    assert code == 1
    found = problems(lines)
    assert len(found) == 2
    assert found[0].startswith(str(tmp_path / "cut.cfl")) and "truncated or mismatched" in found[0]
    assert found[1].startswith(str(tmp_path / "inf.cfl")) and "1 NaN/Inf value(s)" in found[1]


def test_arrays_nonfinite_and_pickled_objects(tmp_path, capsys):
    np.savez(tmp_path / "ok.npz", x=np.linspace(0, 1, 5))
    np.savez(tmp_path / "nan.npz", x=np.array([0.0, np.nan]))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, lines, _ = run_inspect(tmp_path, capsys)
    assert code == 1
    assert "ok.npz[x]: shape (5,), dtype float64, values 0..1" in "\n".join(lines)
    found = problems(lines)
    assert len(found) == 2
    assert found[0].startswith(str(tmp_path / "nan.npz")) and "1 NaN/Inf value(s)" in found[0]
    assert found[1].startswith(str(tmp_path / "objects.npy")) and "pickled Python objects; refused" in found[1]


def test_data_root_inspects_every_subfolder(tmp_path, capsys):
    mnist_folder(tmp_path / "mnist")
    (tmp_path / "faces").mkdir()
    write_png(tmp_path / "faces" / "a.png")
    (tmp_path / "faces" / "b.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "x.dcm").write_bytes(b"DICM")
    code, lines, _ = run_inspect(tmp_path, capsys)
    assert code == 1
    assert lines[0] == f"{tmp_path}: data root, 1 problem(s)"
    text = "\n".join(lines)
    assert "mnist/: MNIST IDX, OK" in text and "faces/: image folder, 1 problem(s)" in text
    assert "dicom/: no data, OK" in text  # formats flowcs does not read are not problems inside a root
    (only,) = problems(lines)
    assert only.startswith(str(tmp_path / "faces" / "b.png")) and "unreadable image" in only


def test_unrecognised_file(tmp_path, capsys):
    f = tmp_path / "scan.dcm"
    f.write_bytes(b"DICM")
    code, lines, _ = run_inspect(f, capsys)
    assert code == 1 and problems(lines)[0].startswith(f"{f}: unrecognised data format")


def test_new_formats_plug_in_with_register(tmp_path):
    @register("toy", lambda p: p.suffix == ".toy")
    def _toy(files, folder, report):
        for f in files:
            if f.read_text() != "ok":
                report.problems.append(f"{f}: not ok")
            else:
                report.summary.append(f"{f.name}: ok")

    try:
        (tmp_path / "a.toy").write_text("ok")
        (tmp_path / "b.toy").write_text("bad")
        report = inspect_path(tmp_path)
        assert isinstance(report, Report) and report.kind == "toy"
        assert report.summary == ["a.toy: ok"] and report.problems == [f"{tmp_path / 'b.toy'}: not ok"]
    finally:
        KINDS[:] = [k for k in KINDS if k.name != "toy"]


def test_an_inspector_crash_is_a_problem_not_a_traceback(tmp_path):
    @register("crashy", lambda p: p.suffix == ".crash")
    def _crash(files, folder, report):
        raise RuntimeError("internal\nsecond line")

    try:
        (tmp_path / "a.crash").write_text("")
        report = inspect_path(tmp_path / "a.crash")
        assert report.problems == [f"{tmp_path / 'a.crash'}: cannot be inspected (RuntimeError: internal)"]
    finally:
        KINDS[:] = [k for k in KINDS if k.name != "crashy"]


# ----------------------------------------------------------------------------- usage errors and the real CLI


def test_missing_path_is_a_usage_error(tmp_path, capsys):
    code = main(["data", "inspect", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"flowcs: error: {tmp_path / 'nowhere'}: no such file or folder"]


def test_missing_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "inspect"])
    assert exc.value.code == 2
    assert "the following arguments are required: path" in capsys.readouterr().err


def test_cli_exit_code_end_to_end(tmp_path):
    """``python -m flowcs data inspect`` itself: a problem → exit 1, one problem line, no traceback."""
    folder = mnist_folder(tmp_path / "mnist")
    shutil.copy(folder / "t10k-labels-idx1-ubyte", folder / "train-labels-idx1-ubyte")  # 32 labels, 64 images
    proc = subprocess.run([sys.executable, "-m", "flowcs", "data", "inspect", str(folder)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr == ""
    (only,) = problems(proc.stdout.splitlines())
    assert only.startswith(str(folder / "train-labels-idx1-ubyte")) and "32 labels but 64 images" in only


def test_mat_file_of_another_kind_lists_its_variables(tmp_path, capsys):
    import scipy.io

    scipy.io.savemat(tmp_path / "other.mat", {"foo": np.zeros(3), "bar": np.ones(2)})
    code, lines, _ = run_inspect(tmp_path / "other.mat", capsys)
    assert code == 1
    assert problems(lines) == [f"{tmp_path / 'other.mat'}: no 'data' (Kellman fat-water) or 'DATA' (multi-coil "
                               "k-space) variable (found: foo, bar)"]
