"""MNIST data layer: real files from ../shared/data and synthetic IDX files for every failure mode."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from flowcs.data import (
    MNIST_MD5,
    load_mnist,
    pad_images,
    read_idx,
    resolve_data_root,
    train_val_split,
    user_cache_dir,
)
from flowcs.data import root as root_module
from flowcs.errors import ConfigError, DataError

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
MNIST_DIR = SHARED_DATA / "mnist"
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _need_mnist() -> Path:
    if not MNIST_DIR.is_dir():
        pytest.skip(f"shared MNIST folder absent: {MNIST_DIR}")
    return MNIST_DIR


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as a uint8 IDX file, gzipped when the name ends in ``.gz``."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)


# ---------------------------------------------------------------- real data


def test_official_test_split():
    split = load_mnist(_need_mnist(), "test")
    assert len(split) == 10000
    assert split.images.shape == (10000, 28, 28) and split.images.dtype == torch.uint8
    assert split.labels.shape == (10000,) and split.labels.dtype == torch.int64
    assert torch.bincount(split.labels, minlength=10).tolist() == TEST_COUNTS
    assert "t10k-images-idx3-ubyte.gz" in split.source and "md5 verified" in split.source
    assert 0 < split.images.float().mean() < 255  # not all black / white


def test_train_split_from_npz_fallback():
    folder = _need_mnist()
    if (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("official train images present; the npz fallback is not used")
    split = load_mnist(folder, "train")
    assert split.images.shape == (60000, 28, 28) and split.images.dtype == torch.uint8
    assert "mnist_train_from_png_approx.npz" in split.source and "approximate" in split.source
    assert "train-labels-idx1-ubyte.gz" in split.source  # labels from the official IDX
    labels = torch.from_numpy(read_idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64))
    assert torch.equal(split.labels, labels)
    assert torch.bincount(split.labels, minlength=10).sum() == 60000


def test_real_labels_match_official_md5():
    folder = _need_mnist()
    path = folder / "t10k-labels-idx1-ubyte.gz"
    assert hashlib.md5(path.read_bytes()).hexdigest() == MNIST_MD5[path.name]
    assert read_idx(path).shape == (10000,)


# ---------------------------------------------------------------- read_idx


def test_read_idx_raw_roundtrip(tmp_path, images):
    path = write_idx(tmp_path / "x-idx3-ubyte", images)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (7, 28, 28)
    np.testing.assert_array_equal(out, images)


def test_read_idx_gzip_and_raw_agree(tmp_path, images):
    raw = read_idx(write_idx(tmp_path / "a-idx3-ubyte", images))
    gz = read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", images))
    np.testing.assert_array_equal(raw, gz)


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "nope.gz"
    with pytest.raises(DataError, match="not found") as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda b: b[:-100], "truncated IDX file (expected 5488 bytes of data, found 5388)"),
        (lambda b: b + b"\x00\x01", "2 trailing bytes"),
        (lambda b: b"\x08\x03" + b[2:], "bad magic"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "unsupported IDX data type code 0x0d (float32)"),
        (lambda b: b[:2] + b"\x42" + b[3:], "unsupported IDX data type code 0x42"),
        (lambda b: b[:10], "truncated IDX file (header"),
        (lambda b: b[:2], "no complete header"),
    ],
)
def test_read_idx_bad_content(tmp_path, images, mutate, problem):
    for gz in (False, True):
        data = mutate(idx_bytes(images))
        path = tmp_path / ("bad-idx3-ubyte" + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        with pytest.raises(DataError) as err:
            read_idx(path)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and problem in message
        assert "\n" not in message


@pytest.mark.parametrize("cut", ["truncate", "garbage", "not_gzip"])
def test_read_idx_corrupt_gzip(tmp_path, images, cut):
    blob = gzip.compress(idx_bytes(images))
    if cut == "truncate":
        blob = blob[: len(blob) // 2]
    elif cut == "garbage":
        blob = blob[:20] + bytes(range(256)) * 4 + blob[20:]
    else:
        blob = idx_bytes(images)  # raw bytes under a .gz name
    path = tmp_path / "c-idx3-ubyte.gz"
    path.write_bytes(blob)
    with pytest.raises(DataError) as err:
        read_idx(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "gzip" in message


def test_read_idx_md5_mismatch_under_official_name(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError) as err:
        read_idx(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert MNIST_MD5[path.name] in message and "official" in message and "verify_checksum=False" in message
    np.testing.assert_array_equal(read_idx(path, verify_checksum=False), labels)
    # an unofficial name is never checksummed
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "my-labels.gz", labels)), labels)


# ---------------------------------------------------------------- load_mnist (synthetic folders)


def _synthetic_folder(folder: Path, n_img: int = 12, n_lbl: int = 12) -> Path:
    """Un-gzipped test-split IDX files (not md5-checked, unlike the official .gz names)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_img, 28, 28), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte", (np.arange(n_lbl) % 10).astype(np.uint8))
    return folder


def test_load_mnist_uncompressed_idx(tmp_path):
    split = load_mnist(_synthetic_folder(tmp_path / "m"), "test")
    assert len(split) == 12 and split.labels.tolist() == [i % 10 for i in range(12)]
    assert "t10k-images-idx3-ubyte" in split.source and "md5 not checked" in split.source


def test_load_mnist_count_mismatch(tmp_path):
    folder = _synthetic_folder(tmp_path / "m", n_img=12, n_lbl=11)
    with pytest.raises(DataError, match="11 labels but 12 images"):
        load_mnist(folder, "test")


def test_load_mnist_label_out_of_range(tmp_path):
    folder = _synthetic_folder(tmp_path / "m")
    write_idx(folder / "t10k-labels-idx1-ubyte", np.full(12, 10, dtype=np.uint8))
    with pytest.raises(DataError, match=r"0\.\.9"):
        load_mnist(folder, "test")


def test_load_mnist_wrong_image_shape(tmp_path):
    folder = _synthetic_folder(tmp_path / "m")
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((12, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match=r"\(n, 28, 28\)"):
        load_mnist(folder, "test")


def test_load_mnist_train_npz_fallback_synthetic(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    imgs = np.random.default_rng(2).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.savez(folder / "mnist_train_from_png_approx.npz", images=imgs, labels=np.zeros(5, np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte", np.array([3, 1, 4, 1, 5], np.uint8))
    split = load_mnist(folder, "train")
    assert split.labels.tolist() == [3, 1, 4, 1, 5]  # IDX labels win over the npz ones
    assert torch.equal(split.images, torch.from_numpy(imgs))
    assert "approximate npz" in split.source
    # the official IDX, once present, is preferred over the npz
    write_idx(folder / "train-images-idx3-ubyte", imgs[::-1].copy())
    assert torch.equal(load_mnist(folder, "train").images, torch.from_numpy(imgs[::-1].copy()))
    # the npz never stands in for the test images
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(folder, "test")


def test_load_mnist_missing_folder(tmp_path):
    folder = tmp_path / "no_such_mnist"
    with pytest.raises(DataError) as err:
        load_mnist(folder, "test")
    assert str(folder) in str(err.value) and "flowcs data download mnist --to" in str(err.value)


def test_load_mnist_missing_files_listed(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError) as err:
        load_mnist(folder, "train", verify_checksum=False)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and "mnist_train_from_png_approx.npz" in message
    assert "train-labels" not in message and "flowcs data download mnist" in message


def test_load_mnist_bad_split(tmp_path):
    with pytest.raises(ConfigError, match="'valid'"):
        load_mnist(tmp_path, "valid")


# ---------------------------------------------------------------- splits and padding


def test_train_val_split_deterministic_disjoint_complete():
    train, val = train_val_split(1000, val_size=100, seed=3)
    train2, val2 = train_val_split(1000, val_size=100, seed=3)
    assert torch.equal(train, train2) and torch.equal(val, val2)
    assert len(val) == 100 and len(train) == 900
    assert torch.equal(torch.sort(torch.cat([train, val])).values, torch.arange(1000))
    assert torch.all(train[1:] > train[:-1]) and torch.all(val[1:] > val[:-1])
    assert not torch.equal(val, train_val_split(1000, val_size=100, seed=4)[1])
    assert not torch.equal(val, torch.arange(100))  # actually shuffled
    assert len(train_val_split(10, val_size=0)[0]) == 10


@pytest.mark.parametrize("val_size", [-1, 10, 11])
def test_train_val_split_bad_size(val_size):
    with pytest.raises(ConfigError, match="val_size"):
        train_val_split(10, val_size=val_size)


def test_pad_images_centre_and_crop_roundtrip():
    x = torch.randint(1, 256, (3, 28, 28), dtype=torch.uint8)
    y = pad_images(x, 32)
    assert y.shape == (3, 32, 32) and y.dtype == torch.uint8
    assert torch.equal(y[:, 2:30, 2:30], x)
    border = y.clone()
    border[:, 2:30, 2:30] = 0
    assert border.count_nonzero() == 0
    assert torch.equal(pad_images(x, 28), x)
    assert pad_images(x[0], 32).shape == (32, 32)
    with pytest.raises(ConfigError, match="smaller"):
        pad_images(x, 27)


# ---------------------------------------------------------------- data root


def test_user_cache_dir_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "flowcs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == Path.home() / ".cache" / "flowcs"


def test_resolve_data_root_order(monkeypatch, tmp_path):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    env.mkdir()
    cwd = tmp_path / "work" / "repo"
    cwd.mkdir(parents=True)
    (tmp_path / "work" / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("FLOWCS_DATA", str(env))
    assert resolve_data_root(explicit) == explicit.resolve()
    assert resolve_data_root(str(explicit)) == explicit.resolve()
    assert resolve_data_root() == env.resolve()
    monkeypatch.delenv("FLOWCS_DATA")
    assert resolve_data_root() == (tmp_path / "work" / "shared" / "data").resolve()


def test_resolve_data_root_repo_then_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("FLOWCS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    monkeypatch.chdir(lonely)  # no ../shared/data here
    repo_shared = root_module._repo_shared_data()
    expected = repo_shared.resolve() if repo_shared.is_dir() else tmp_path / "cache" / "flowcs" / "data"
    assert resolve_data_root() == expected.resolve()
    # with the repo fallback hidden, the per-user cache is created and returned
    monkeypatch.setattr(root_module, "_repo_shared_data", lambda: tmp_path / "absent")
    cache = resolve_data_root()
    assert cache == (tmp_path / "cache" / "flowcs" / "data").resolve() and cache.is_dir()


def test_resolve_data_root_missing_paths(monkeypatch, tmp_path):
    missing = tmp_path / "does_not_exist"
    with pytest.raises(DataError) as err:
        resolve_data_root(missing)
    assert str(missing) in str(err.value)
    monkeypatch.setenv("FLOWCS_DATA", os.fspath(missing))
    with pytest.raises(DataError, match="FLOWCS_DATA"):
        resolve_data_root()
