"""Raw data from real acquisitions: multi-coil fastMRI .h5 (the real 8-coil brain k-space written in that layout),
ISMRMRD raw data (written with the ismrmrd package's writer), and their one-line errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from conftest import brain_kspace_numpy, numpy_images
from flowcs.data.fastmri import inspect_volume, read_rss, read_volume_images
from flowcs.data.ismrmrd_raw import is_ismrmrd, read_ismrmrd, write_ismrmrd
from flowcs.data.kspace_files import read_kspace_images
from flowcs.errors import DataError


def one_line(exc, *fragments):
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg


def test_real_multicoil_file_reads_as_the_svd_virtual_coil_and_rss(brain_multicoil):
    k = brain_kspace_numpy()
    info = inspect_volume(brain_multicoil)
    assert (info.n_slices, info.coils, info.rows, info.cols, info.multicoil) == (1, 8, 320, 168, True)
    images, idx = read_volume_images(brain_multicoil, None, None)
    assert images.shape == (1, 320, 168) and idx == [0]
    # numpy reference: first right singular vector of the samples x coils matrix
    flat = np.moveaxis(k, 0, -1).reshape(-1, 8).astype(np.complex128)
    w = np.linalg.svd(flat, full_matrices=False)[2].conj().T[:, 0]
    virtual = numpy_images((flat @ w).reshape(320, 168))
    np.testing.assert_allclose(np.abs(images[0]), np.abs(virtual), rtol=0, atol=2e-4 * np.abs(virtual).max())
    rss = np.sqrt((np.abs(numpy_images(k)) ** 2).sum(0))
    assert np.all(np.abs(images[0]) <= rss * (1 + 1e-4) + 1e-3)  # |virtual coil| <= RSS (Cauchy-Schwarz)
    np.testing.assert_allclose(read_rss(brain_multicoil, 0), rss, rtol=1e-5, atol=1e-3)
    # on request (or without a stored target) the RSS comes from the coils
    np.testing.assert_allclose(read_rss(brain_multicoil, 0, stored=False), rss, rtol=1e-4, atol=1e-2)
    got = read_kspace_images(brain_multicoil)
    assert got.format == "fastmri-multicoil" and got.coils == 8 and got.cols == 168
    np.testing.assert_allclose(got.rss[0], rss, rtol=1e-4, atol=1e-2)
    # a crop is checked against the image's rows and columns, not against the coil axis (8 < 128)
    cropped, _ = read_volume_images(brain_multicoil, 128, None)
    assert cropped.shape == (1, 128, 128)
    with pytest.raises(DataError, match="crop 200x200 is larger than the 320x168 image"):
        read_volume_images(brain_multicoil, 200, None)


def test_bad_multicoil_files_are_one_line_errors(tmp_path):
    cases = {
        "rank5.h5": (np.zeros((1, 2, 3, 8, 8), np.complex64), None, "rank 5"),
        "coils_last.h5": (np.zeros((2, 96, 80, 8), np.complex64), None, "coil axis looks last"),
        "small_coils_last.h5": (np.zeros((3, 40, 32, 8), np.complex64), None, "coil axis looks last"),
        "real.h5": (np.zeros((2, 4, 8, 8), np.float32), None, "expected complex"),
        "real_view.h5": (np.zeros((2, 96, 80, 2), np.float32), None, "expected complex"),
        "rss_mismatch.h5": (np.zeros((2, 4, 8, 8), np.complex64), np.zeros((3, 8, 8), np.float32),
                            "'reconstruction_rss' has shape (3, 8, 8)"),
    }
    for name, (k, rss, fragment) in cases.items():
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("kspace", data=k)
            if rss is not None:
                f.create_dataset("reconstruction_rss", data=rss)
        with pytest.raises(DataError) as exc:
            inspect_volume(tmp_path / name)
        one_line(exc, str(tmp_path / name), fragment)
    nan = np.ones((1, 3, 16, 12), np.complex64)
    nan[0, 2, 4, 4] = np.nan
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        f.create_dataset("kspace", data=nan)
    with pytest.raises(DataError) as exc:
        read_volume_images(tmp_path / "nan.h5")
    one_line(exc, str(tmp_path / "nan.h5"), "NaN/Inf")
    mat = tmp_path / "scan.mat"
    scipy.io.savemat(mat, {"DATA": np.ones((4, 4), np.complex64)})
    for call in (lambda: inspect_volume(mat), lambda: read_kspace_images(mat)):
        with pytest.raises(DataError) as exc:
            call()
        one_line(exc, str(mat), "MATLAB .mat file", "wrong format")


def random_kspace(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_ismrmrd_round_trip_with_the_package_writer(tmp_path):
    pytest.importorskip("ismrmrd", reason="the 'ismrmrd' extra is not installed: pip install 'flowcs[ismrmrd]'")
    for cols in (24, 25):  # even and odd phase-encode grids
        k = random_kspace((2, 3, 32, cols), seed=cols)
        path = write_ismrmrd(tmp_path / f"raw{cols}.h5", k, noise_lines=3)
        assert is_ismrmrd(path)
        raw = read_ismrmrd(path)
        assert raw.kspace.dtype == np.complex64 and raw.skipped == 3
        np.testing.assert_array_equal(raw.kspace, k)
        images = read_kspace_images(path, None)
        assert images.format == "ismrmrd" and images.coils == 3 and images.images.shape == (2, 32, cols)


def test_ismrmrd_repeated_lines_are_averaged_and_gaps_are_refused(tmp_path):
    ismrmrd = pytest.importorskip("ismrmrd", reason="the 'ismrmrd' extra is not installed")
    k = random_kspace((1, 2, 16, 12), seed=1)
    path = write_ismrmrd(tmp_path / "avg.h5", k)
    extra = random_kspace((2, 16), seed=2)
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as d:  # a second average of line 5
        acq = ismrmrd.Acquisition.from_array(extra)
        acq.idx.kspace_encode_step_1, acq.idx.average = 5, 1
        d.append_acquisition(acq)
    got = read_ismrmrd(path).kspace
    np.testing.assert_allclose(got[0, :, :, 5], (k[0, :, :, 5] + extra) / 2, rtol=1e-6)
    np.testing.assert_array_equal(np.delete(got, 5, axis=-1), np.delete(k, 5, axis=-1))
    # a file with a missing line: not fully sampled
    gap = tmp_path / "gap.h5"
    with h5py.File(path, "r") as src, h5py.File(gap, "w") as dst:
        src.copy("dataset/xml", dst.require_group("dataset"))
        data = src["dataset/data"][:]
        keep = np.array([h["idx"]["kspace_encode_step_1"] != 7 for h in data["head"]])
        dst["dataset"].create_dataset("data", data=data[keep], maxshape=(None,))
    with pytest.raises(DataError) as exc:
        read_ismrmrd(gap)
    one_line(exc, str(gap), "not fully sampled", "1 of 12 phase-encode lines missing")


def test_ismrmrd_lines_that_are_not_image_data_are_skipped(tmp_path):
    ismrmrd = pytest.importorskip("ismrmrd", reason="the 'ismrmrd' extra is not installed")
    k = random_kspace((1, 2, 16, 12), seed=3)
    path = write_ismrmrd(tmp_path / "extra.h5", k)
    kinds = [("encoding space 1", None), ("feedback", ismrmrd.ACQ_IS_RTFEEDBACK_DATA),
             ("calibration only", ismrmrd.ACQ_IS_PARALLEL_CALIBRATION),
             ("phase stabilisation", ismrmrd.ACQ_IS_PHASE_STABILIZATION)]
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as d:  # all at line 5, other values
        for i, (_, flag) in enumerate(kinds):
            acq = ismrmrd.Acquisition.from_array(random_kspace((2, 16), seed=10 + i))
            acq.idx.kspace_encode_step_1 = 5
            if flag is None:
                acq.encoding_space_ref = 1
            else:
                acq.set_flag(flag)
            d.append_acquisition(acq)
        # a calibration line that is also an imaging line is image data (here: a second average of line 6)
        both = random_kspace((2, 16), seed=20)
        acq = ismrmrd.Acquisition.from_array(both)
        acq.idx.kspace_encode_step_1, acq.idx.average = 6, 1
        acq.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
        acq.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
        d.append_acquisition(acq)
    raw = read_ismrmrd(path)
    assert raw.skipped == len(kinds)
    np.testing.assert_array_equal(raw.kspace[0, :, :, 5], k[0, :, :, 5])
    np.testing.assert_allclose(raw.kspace[0, :, :, 6], (k[0, :, :, 6] + both) / 2, rtol=1e-6)


def test_ismrmrd_writer_leaves_no_half_written_file(tmp_path, monkeypatch):
    ismrmrd = pytest.importorskip("ismrmrd", reason="the 'ismrmrd' extra is not installed")
    path = write_ismrmrd(tmp_path / "raw.h5", random_kspace((1, 1, 8, 8)))
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ismrmrd.Dataset, "append_acquisition", fail)
    with pytest.raises(RuntimeError):
        write_ismrmrd(path, random_kspace((1, 1, 8, 8), seed=5))
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]  # untouched; no temp left


def test_bad_ismrmrd_files_are_one_line_errors(tmp_path):
    pytest.importorskip("ismrmrd", reason="the 'ismrmrd' extra is not installed")
    path = write_ismrmrd(tmp_path / "ok.h5", random_kspace((1, 1, 8, 8)))
    no_xml = tmp_path / "no_xml.h5"
    with h5py.File(path, "r") as src, h5py.File(no_xml, "w") as dst:
        src.copy("dataset/data", dst.require_group("dataset"))
    with pytest.raises(DataError) as exc:
        read_ismrmrd(no_xml)
    one_line(exc, str(no_xml), "no ISMRMRD XML header")
    radial = tmp_path / "radial.h5"
    with h5py.File(path, "r") as src, h5py.File(radial, "w") as dst:
        src.copy("dataset/data", dst.require_group("dataset"))
        xml = src["dataset/xml"][0].decode().replace(">cartesian<", ">radial<")
        dst["dataset"].create_dataset("xml", data=[xml.encode()], dtype=h5py.special_dtype(vlen=bytes))
    with pytest.raises(DataError) as exc:
        read_ismrmrd(radial)
    one_line(exc, str(radial), "trajectory 'radial'", "Cartesian")
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError) as exc:
        read_ismrmrd(text)
    one_line(exc, str(text), "not a readable HDF5 file")
