"""MRI data layer: fastMRI .h5 reader (on synthetic files in the official layout), bad input, real .mat/.cfl readers."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from flowcs.data.fastmri import (
    FastMRISlices,
    center_crop,
    center_slices,
    inspect_volume,
    read_slice,
    read_volume_images,
    split_volumes,
)
from flowcs.data.mri_files import (
    build_mri_splits,
    coil_compress,
    crop_or_pad,
    espirit_image,
    lf_scale,
    random_view,
    read_cfl,
    read_kellman,
    write_cfl,
)
from flowcs.data.synthetic import phantom_volume, write_fastmri_volume, write_synthetic_dataset
from flowcs.errors import ConfigError, DataError
from flowcs.operators import low_frequency_band
from flowcs.operators.fft import fft2c, ifft2c

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
KELLMAN = SHARED / "mri_complex_kellman_fatwater"
ESPIRIT = SHARED / "mri_kspace_espirit_brain8ch" / "brain_alias_8ch.mat"
BART = SHARED / "mri_kspace_bart_pics_brain"


def one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> tuple[Path, np.ndarray]:
    images = phantom_volume(25, 160, 144, seed=3)
    path = write_fastmri_volume(tmp_path_factory.mktemp("h5") / "file1000001.h5", images)
    return path, images


def test_synthetic_file_has_the_official_fastmri_layout(volume):
    path, images = volume
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == {"kspace", "ismrmrd_header", "reconstruction_esc"}
        assert f["kspace"].shape == (25, 160, 144) and f["kspace"].dtype == np.complex64
        assert f["reconstruction_esc"].shape == (25, 144, 144) and f["reconstruction_esc"].dtype == np.float32
        assert b"ismrmrdHeader" in f["ismrmrd_header"][()]
        assert {"acquisition", "max", "norm", "patient_id"} <= set(f.attrs)
        k = f["kspace"][3]
    # k-space is the centred orthonormal FFT of the images
    assert np.allclose(k, fft2c(torch.from_numpy(images[3])).numpy(), atol=1e-5)
    assert np.abs(images).max() > 0.5 and np.iscomplexobj(images) and np.abs(np.angle(images[12])).max() > 0.1


def test_reader_returns_the_centre_slices_and_cropped_shapes(volume):
    path, images = volume
    info = inspect_volume(path)
    assert (info.n_slices, info.rows, info.cols) == (25, 160, 144) and info.has_header
    assert info.attrs["acquisition"] == "CORPD_FBK"
    imgs, idx = read_volume_images(path, 128)
    assert idx == list(range(2, 23))  # centre 12 ± 10
    assert imgs.shape == (21, 128, 128) and imgs.dtype == np.complex64
    # slice i of the result is slice idx[i] of the file, centre-cropped (rows 16:144, cols 8:136)
    assert np.allclose(imgs[0], images[2, 16:144, 8:136], atol=1e-5)
    assert np.allclose(imgs[10], images[12, 16:144, 8:136], atol=1e-5)
    assert np.allclose(read_slice(path, 7, 64), images[7, 48:112, 40:104], atol=1e-5)
    full, all_idx = read_volume_images(path, None, None)
    assert full.shape == (25, 160, 144) and all_idx == list(range(25))


@pytest.mark.parametrize("n,expected", [(1, [0]), (5, [0, 1, 2, 3, 4]), (21, list(range(21))),
                                        (35, list(range(7, 28))), (36, list(range(8, 29)))])
def test_center_slices(n, expected):
    assert center_slices(n) == expected


def test_lazy_dataset_reads_per_slice_and_pickles_without_handles(volume, tmp_path):
    path, images = volume
    other = write_fastmri_volume(tmp_path / "file1000002.h5", n_slices=3, rows=140, cols=130, seed=9)
    ds = FastMRISlices([path, other], 128)
    assert len(ds) == 21 + 3
    x = ds[0]
    assert x.shape == (2, 128, 128) and x.dtype == torch.float32
    assert np.allclose(x[0].numpy() + 1j * x[1].numpy(), images[2, 16:144, 8:136], atol=1e-5)
    assert ds.volume_of(23) == "file1000002.h5" and ds.slices[23] == (1, 2)
    assert ds._handles  # opened lazily on first access
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {}
    assert torch.equal(clone[5], ds[5])
    ds.close()
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    assert next(iter(loader)).shape == (4, 2, 128, 128)


def test_volume_level_split_keeps_volumes_whole(tmp_path):
    files = write_synthetic_dataset(tmp_path, 10, n_slices=2, rows=32, cols=32)
    split = split_volumes(files, 0.2, 0.2, seed=0)
    assert [len(split[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    names = [p.name for s in split.values() for p in s]
    assert sorted(names) == sorted(p.name for p in files)  # a partition: every volume exactly once
    assert split == split_volumes(list(reversed(files)), 0.2, 0.2, seed=0)  # deterministic, order-free
    assert split != split_volumes(files, 0.2, 0.2, seed=1)
    sets = build_mri_splits("fastmri", tmp_path, 16, fastmri_dir=str(tmp_path), half_width=None)
    for s in ("train", "val", "test"):
        assert {v for v in sets[s].volumes} == {p.name for p in split[s]}
        assert sets[s].image(0).shape == (16, 16)
    one = split_volumes(files[:1], 0.2, 0.2)
    assert one == {"test": [], "val": [], "train": [files[0]]}  # a lone volume trains; it is never cut up
    lone = tmp_path / "lone"
    lone.mkdir()
    files[0].rename(lone / files[0].name)
    with pytest.raises(DataError, match="test split is empty"):
        build_mri_splits("fastmri", tmp_path, 16, fastmri_dir=str(lone))
    with pytest.raises(ConfigError, match="leaves no training volumes"):
        split_volumes(files, 0.5, 0.5)


# ----------------------------------------------------------------------------- bad input


def test_h5_without_kspace_is_a_one_line_error(tmp_path):
    path = tmp_path / "nokspace.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("reconstruction_esc", data=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(DataError) as exc:
        read_volume_images(path, 4)
    one_line(exc, str(path), "no 'kspace' dataset", "reconstruction_esc")


def test_truncated_h5_is_a_one_line_error(volume, tmp_path):
    src, _ = volume
    data = src.read_bytes()
    for cut in (len(data) // 2, 100):
        path = tmp_path / f"truncated{cut}.h5"
        path.write_bytes(data[:cut])
        with pytest.raises(DataError) as exc:
            read_volume_images(path, 128)
        one_line(exc, str(path))
        assert "truncated or corrupt" in str(exc.value)


def test_not_hdf5_and_missing_file(tmp_path):
    path = tmp_path / "junk.h5"
    path.write_text("hello")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        inspect_volume(path)
    with pytest.raises(DataError, match="not found"):
        inspect_volume(tmp_path / "missing.h5")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_kspace_is_a_one_line_error(tmp_path, bad):
    k = fft2c(torch.from_numpy(phantom_volume(5, 32, 32, seed=1))).numpy()
    k[2, 10, 11] = bad
    path = write_fastmri_volume(tmp_path / "bad.h5", kspace=k)
    with pytest.raises(DataError) as exc:
        read_volume_images(path, 16)
    one_line(exc, str(path), "k-space slice 2", "NaN/Inf")
    ds = FastMRISlices([path], 16)
    ds[0]  # other slices stay readable
    with pytest.raises(DataError, match="NaN/Inf"):
        ds[2]


def test_crop_larger_than_the_image_is_a_one_line_error(volume):
    path, _ = volume
    for call in (lambda: read_volume_images(path, 208), lambda: FastMRISlices([path], 150),
                 lambda: read_slice(path, 0, 145)):
        with pytest.raises(DataError) as exc:
            call()
        one_line(exc, str(path), "larger than the 160x144 image")


def test_wrong_rank_and_dtype_are_one_line_errors(tmp_path):
    multi = tmp_path / "coils_last.h5"
    with h5py.File(multi, "w") as f:
        f.create_dataset("kspace", data=np.zeros((2, 96, 80, 4), np.complex64))
    with pytest.raises(DataError) as exc:
        inspect_volume(multi)
    one_line(exc, str(multi), "coil axis looks last")
    flat = tmp_path / "rank2.h5"
    with h5py.File(flat, "w") as f:
        f.create_dataset("kspace", data=np.zeros((16, 16), np.complex64))
    with pytest.raises(DataError, match="rank 2"):
        inspect_volume(flat)
    real = tmp_path / "real.h5"
    with h5py.File(real, "w") as f:
        f.create_dataset("kspace", data=np.zeros((2, 16, 16), np.float32))
    with pytest.raises(DataError, match="expected complex"):
        inspect_volume(real)


# ----------------------------------------------------------------------------- geometry & normalisation


def test_crop_or_pad_is_centre_crop_and_symmetric_pad():
    img = torch.arange(6 * 4, dtype=torch.float32).reshape(6, 4).to(torch.complex64)
    out = crop_or_pad(img, 5)
    # rows 6 → 5: start (6 - 5) // 2 = 0; cols 4 → 5: (5 - 4) // 2 = 0 zeros before, 1 after
    assert torch.equal(out[:, :4], img[:5])
    assert torch.equal(out[:, 4], torch.zeros(5, dtype=torch.complex64))
    out = crop_or_pad(img, 2)
    assert torch.equal(out, img[2:4, 1:3])
    out = crop_or_pad(img, 8)
    assert torch.equal(out[1:7, 2:6], img) and out.abs().sum() == img.abs().sum()
    # fastMRI's centre crop convention agrees with numpy
    a = np.arange(7 * 9).reshape(7, 9)
    assert np.array_equal(center_crop(a, 4), a[1:5, 2:6])
    assert torch.equal(crop_or_pad(torch.from_numpy(a), 4), torch.from_numpy(a[1:5, 2:6]))
    # shifts move the window and are clipped at the border
    assert torch.equal(crop_or_pad(img, 2, (1, -1)), img[3:5, 0:2])
    assert torch.equal(crop_or_pad(img, 2, (100, 100)), img[4:6, 2:4])


def test_lf_scale_normalises_the_lf_reconstruction_to_one():
    one = torch.from_numpy(phantom_volume(1, 64, 64, seed=0))
    imgs = one.expand(3, -1, -1) * torch.tensor([1.0, 10.0, 0.1])[:, None, None]
    s = lf_scale(imgs, 0.08)
    band = low_frequency_band(64, 0.08)
    lf = ifft2c(fft2c(imgs / s[:, None, None]) * band)
    assert torch.allclose(lf.abs().flatten(1).amax(1), torch.ones(3), atol=1e-5)
    assert s[1] / s[0] == pytest.approx(10.0, rel=1e-4)


def test_random_view_is_reproducible_and_keeps_magnitudes():
    img = torch.from_numpy(phantom_volume(1, 80, 70, seed=2)[0])
    a = random_view(img, 64, torch.Generator().manual_seed(5), max_shift=4, transpose=True)
    b = random_view(img, 64, torch.Generator().manual_seed(5), max_shift=4, transpose=True)
    assert torch.equal(a, b) and a.shape == (64, 64)
    plain = random_view(img, 64, torch.Generator().manual_seed(5), flips=False, random_phase=False)
    assert torch.equal(plain, crop_or_pad(img, 64))


# ----------------------------------------------------------------------------- real files in ../shared/data


@pytest.mark.skipif(not KELLMAN.is_dir(), reason=f"real data folder absent: {KELLMAN}")
def test_kellman_reader_and_split_by_file():
    scan = read_kellman(KELLMAN / "PKdata3.mat")
    assert scan.images.shape == (3, 256, 192) and scan.images.dtype == np.complex64
    assert scan.te == pytest.approx([1.55e-3, 3.82e-3, 6.09e-3], rel=1e-2)
    assert scan.field_strength == pytest.approx(1.5)
    sets = build_mri_splits("kellman", SHARED, 128, val_files=["PKdata4.mat"],
                            test_files=["PKdata3.mat", "PKdataset16.mat"], brain=None)
    vols = {s: set(v.volumes) for s, v in sets.items()}
    assert vols["test"] == {"PKdata3.mat", "PKdataset16.mat"} and vols["val"] == {"PKdata4.mat"}
    assert not (vols["train"] & vols["test"]) and not (vols["train"] & vols["val"])  # by file, never by echo
    assert len(sets["test"]) == 3 + 2 and len(sets["train"]) + len(sets["val"]) + len(sets["test"]) == 61
    assert sets["test"].names[0] == "PKdata3.mat#echo1"
    with pytest.raises(DataError, match="PKdata99.mat"):
        build_mri_splits("kellman", SHARED, 128, test_files=["PKdata99.mat"])


@pytest.mark.skipif(not ESPIRIT.is_file(), reason=f"real data file absent: {ESPIRIT}")
def test_espirit_coil_compression_to_one_virtual_coil():
    img = espirit_image(ESPIRIT)
    assert img.shape == (320, 168) and img.dtype == np.complex64
    from flowcs.data.mri_files import read_espirit_kspace

    k = read_espirit_kspace(ESPIRIT)
    v = coil_compress(k, 8)
    energy = (np.abs(v) ** 2).sum(axis=(0, 1))
    assert np.all(np.diff(energy) <= 1e-6 * energy[0])  # virtual coils sorted by energy
    assert energy.sum() == pytest.approx((np.abs(k) ** 2).sum(), rel=1e-6)  # a unitary change of basis
    assert energy[0] / energy.sum() > 0.45  # the best single virtual coil keeps about half the energy


def test_coil_compression_recovers_a_rank_one_coil_set():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(10, 12)) + 1j * rng.normal(size=(10, 12))
    sens = rng.normal(size=4) + 1j * rng.normal(size=4)
    k = base[..., None] * sens
    v = coil_compress(k, 1)[..., 0]
    assert np.allclose(np.abs(v), np.abs(base) * np.linalg.norm(sens), rtol=1e-6)
    with pytest.raises(ConfigError):
        coil_compress(k, 5)


@pytest.mark.skipif(not BART.is_dir(), reason=f"real data folder absent: {BART}")
def test_bart_cfl_reader_on_real_files(tmp_path):
    ksp = read_cfl(BART / "ksp")
    assert ksp.shape[:4] == (1, 180, 230, 8) and ksp.dtype == np.complex64
    assert 0.12 < np.mean(ksp != 0) < 0.13  # the Poisson-disc undersampling of the demo (12.66 %)
    img = read_cfl(BART / "img.cfl")
    assert img.shape[:5] == (1, 180, 230, 1, 2) and np.abs(img).max() == pytest.approx(2.37, abs=0.01)


def test_cfl_round_trip_and_truncation(tmp_path):
    a = (np.arange(24).reshape(2, 3, 4) + 1j).astype(np.complex64)
    write_cfl(tmp_path / "a", a)
    back = read_cfl(tmp_path / "a")
    assert np.array_equal(back.reshape(2, 3, 4), a)
    (tmp_path / "a.cfl").write_bytes((tmp_path / "a.cfl").read_bytes()[:50])
    with pytest.raises(DataError, match="truncated"):
        read_cfl(tmp_path / "a")
