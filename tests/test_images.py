"""Image utilities and face loaders: round trips, the crop/resize protocol, and one-line errors for bad files."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flowcs.data import pad_images
from flowcs.data.faces import decode_jpeg_npz, fixed_subset, load_celeba, load_faces, read_partition
from flowcs.data.images import (
    center_crop_box,
    center_square_resize,
    crop_center,
    decode_rgb,
    load_image_folder,
    resize,
    to_tensor,
    to_uint8,
)
from flowcs.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
FACES_NPZ = SHARED / "faces_celeba_10k" / "celeba_10k_89x109_jpeg.npz"
CELEBA_32 = SHARED / "celeba_32"


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def _needs(path: Path):
    if not path.exists():
        pytest.skip(f"real data absent: {path}")


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", [28, 29, 32, 33])
def test_pad_then_center_crop_is_identity(size):
    x = torch.rand(3, 1, 28, 28)
    padded = pad_images(x, size)
    assert padded.shape[-2:] == (size, size)
    assert torch.equal(crop_center(padded, 28), x)
    assert padded.sum().item() == pytest.approx(x.sum().item())  # only zeros were added


def test_center_crop_box_matches_the_shared_set_protocol():
    # SOURCE.txt of faces_celeba_10k: crop (0, 10, 89, 99) of the 89x109 images = the central 89x89 square
    assert center_crop_box(109, 89, 89, 89) == (0, 10, 89, 99)
    assert center_crop_box(218, 178, 178, 178) == (0, 20, 178, 198)  # full-resolution CelebA
    with pytest.raises(ConfigError, match="does not fit"):
        center_crop_box(10, 10, 11, 4)


def test_channels_last_crop_matches_channels_first_crop():
    x = np.random.default_rng(0).integers(0, 255, (2, 9, 7, 3), dtype=np.uint8)
    a = crop_center(x, 5, 3, channels_last=True)
    b = crop_center(torch.from_numpy(x).permute(0, 3, 1, 2), 5, 3).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(a, b) and a.shape == (2, 5, 3, 3)
    # central square of the shorter side, then resize: at the square's own size that is the crop itself
    assert np.array_equal(center_square_resize(x[0], 7), x[0, 1:8])
    assert center_square_resize(x[0], 4).shape == (4, 4, 3)


def test_tensor_uint8_round_trip_is_exact():
    img = np.random.default_rng(1).integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    t = to_tensor(img)
    assert t.shape == (4, 3, 6, 5) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert np.array_equal(to_uint8(t), img)
    assert np.array_equal(to_uint8(to_tensor(img[0])), img[0])


def test_resize_keeps_constants_and_is_nearly_invertible():
    flat = np.full((20, 30, 3), 77, dtype=np.uint8)
    assert np.array_equal(resize(flat, (10, 15)), np.full((10, 15, 3), 77, dtype=np.uint8))
    # a smooth image survives 32 -> 64 -> 32 within a couple of grey levels
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    smooth = (np.stack([yy, xx, (yy + xx) / 2], -1) * 255).round().astype(np.uint8)
    back = resize(resize(smooth, 64), 32)
    assert np.abs(back.astype(int) - smooth.astype(int)).max() <= 3
    with pytest.raises(ConfigError, match="uint8"):
        resize(smooth.astype(np.float32), 8)
    with pytest.raises(ConfigError, match="resampling filter"):
        resize(smooth, 8, "cubic-ish")


def test_center_square_resize_of_shared_jpegs_equals_the_stored_rgb_array():
    """Our decode -> central 89x89 crop -> bicubic 64x64 reproduces the scout's stored array byte for byte."""
    _needs(FACES_NPZ)
    images, names = decode_jpeg_npz(FACES_NPZ, 64, indices=[0, 1, 1999])
    with np.load(SHARED / "faces_celeba_10k" / "celeba_first2000_64x64_rgb.npz") as ref:
        assert list(ref["names"][[0, 1, 1999]]) == names
        assert np.array_equal(images, ref["images"][[0, 1, 1999]])


def test_full_and_half_resolution_celeba_agree_after_the_protocol(tmp_path):
    """The user CelebA loader (178x218) and the shared half-resolution set give nearly the same 64x64 faces."""
    _needs(FACES_NPZ)
    _needs(CELEBA_32)
    root = _celeba_copy(tmp_path, {f"{i:06d}.jpg": 0 for i in range(1, 9)})
    full = load_celeba(root, "train", image_size=64).images
    half, names = decode_jpeg_npz(FACES_NPZ, 64, indices=list(range(8)))
    assert names == [f"{i:06d}.jpg" for i in range(1, 9)]
    diff = np.abs(full.astype(float) - half.astype(float)).mean()
    assert diff < 6.0, diff  # grey levels: two JPEG encodings of the same faces


# ----------------------------------------------------------------------------- folders and bad files


def test_image_folder_loads_sorted_rgb(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("b.png", "a.png"):
        (tmp_path / name).write_bytes(_png(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)))
    (tmp_path / "notes.txt").write_text("not an image, ignored by suffix")
    images, names = load_image_folder(tmp_path)
    assert names == ["a.png", "b.png"] and images.shape == (2, 12, 10, 3) and images.dtype == np.uint8
    images, _ = load_image_folder(tmp_path, size=8)
    assert images.shape == (2, 8, 8, 3)


def _one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg


def test_empty_or_missing_image_folder(tmp_path):
    with pytest.raises(DataError) as exc:
        load_image_folder(tmp_path)
    _one_line(exc, str(tmp_path), "no image files")
    with pytest.raises(DataError) as exc:
        load_image_folder(tmp_path / "nope")
    _one_line(exc, "nope", "not found")


def test_unreadable_image_names_the_file(tmp_path):
    good = np.zeros((8, 8, 3), dtype=np.uint8)
    (tmp_path / "000001.jpg").write_bytes(_png(good))
    (tmp_path / "000002.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(DataError) as exc:
        load_image_folder(tmp_path)
    _one_line(exc, "000002.jpg", "unreadable image")


@pytest.mark.parametrize("mode,array", [("L", np.zeros((8, 8), np.uint8)), ("RGBA", np.zeros((8, 8, 4), np.uint8))])
def test_non_rgb_image_names_the_file(tmp_path, mode, array):
    (tmp_path / "a.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    (tmp_path / "b.png").write_bytes(_png(array, mode))
    with pytest.raises(DataError) as exc:
        load_image_folder(tmp_path)
    _one_line(exc, "b.png", "not an RGB image", repr(mode))


def test_mixed_image_sizes_name_the_file(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    (tmp_path / "b.png").write_bytes(_png(np.zeros((9, 8, 3), np.uint8)))
    with pytest.raises(DataError) as exc:
        load_image_folder(tmp_path, size=4)
    _one_line(exc, "b.png", "9x8", "mixed image sizes")


def test_decode_rgb_names_the_archive_entry():
    with pytest.raises(DataError) as exc:
        decode_rgb(b"not an image", "faces.npz[000007.jpg]")
    _one_line(exc, "faces.npz[000007.jpg]", "unreadable")


# ----------------------------------------------------------------------------- CelebA layouts


def _celeba_copy(tmp_path: Path, partition: dict[str, int]) -> Path:
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    for name in partition:
        shutil.copy(CELEBA_32 / name, root / "img_align_celeba" / name)
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in partition.items()))
    return root


def test_user_celeba_standard_split_crop_resize_and_cache(tmp_path, monkeypatch):
    _needs(CELEBA_32)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    part = {f"{i:06d}.jpg": (0 if i <= 6 else 2) for i in range(1, 11)}
    root = _celeba_copy(tmp_path, part)
    test = load_faces(tmp_path, "test", source="celeba", image_size=128, path=root)
    assert test.images.shape == (4, 128, 128, 3) and test.names == ["000007.jpg", "000008.jpg", "000009.jpg",
                                                                     "000010.jpg"]
    assert "central 178x178 crop" in test.source and "standard test partition" in test.source
    assert test.tensor().shape == (4, 3, 128, 128)
    cached = list((tmp_path / "cache" / "flowcs" / "faces").glob("*.npz"))
    assert len(cached) == 1
    # the cache answers the second call, even with the images gone
    shutil.rmtree(root / "img_align_celeba" )
    (root / "img_align_celeba").mkdir()
    again = load_faces(tmp_path, "test", source="celeba", image_size=128, path=root)
    assert np.array_equal(again.images, test.images)
    train = load_faces(tmp_path, "train", source="celeba", image_size=32, path=_celeba_copy(tmp_path / "b", part),
                       limit=3)
    assert train.images.shape == (3, 32, 32, 3) and train.names[0] == "000001.jpg"


def test_bad_partition_files(tmp_path):
    bad = tmp_path / "list_eval_partition.txt"
    bad.write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(DataError) as exc:
        read_partition(bad)
    _one_line(exc, "list_eval_partition.txt:2", "000002.jpg train")
    (tmp_path / "img_align_celeba").mkdir()
    bad.unlink()
    with pytest.raises(DataError) as exc:
        load_celeba(tmp_path, "test")
    _one_line(exc, "list_eval_partition.txt", "not found")


def test_celeba_folder_with_a_broken_listed_image(tmp_path):
    _needs(CELEBA_32)
    root = _celeba_copy(tmp_path, {"000001.jpg": 2, "000002.jpg": 2})
    (root / "img_align_celeba" / "000002.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError) as exc:
        load_celeba(root, "test", image_size=32)
    _one_line(exc, "000002.jpg", "unreadable")
    (root / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError) as exc:
        load_celeba(root, "test", image_size=32)
    _one_line(exc, "000002.jpg", "not found")


def test_shared_10k_split_by_id_and_fixed_subset(tmp_path, monkeypatch):
    _needs(FACES_NPZ)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    test = load_faces(SHARED, "test", image_size=16)
    assert len(test) == 1000 and test.names[0] == "009001.jpg" and test.names[-1] == "010000.jpg"
    assert test.images.shape == (1000, 16, 16, 3)
    assert "split by image id" in test.source and "89x89 crop" in test.source
    train = load_faces(SHARED, "train", image_size=16, limit=50)
    assert len(train) == 50 and train.names[0] == "000001.jpg" and "first 50 used" in train.source
    assert set(train.names).isdisjoint(test.names)
    idx = fixed_subset(test.names)
    assert idx.tolist() == list(range(100))
    assert fixed_subset(list(reversed(test.names)), 3).tolist() == [997, 998, 999]
    val = load_faces(SHARED, "val", image_size=16)
    assert len(val) == 500 and val.names[0] == "008501.jpg" and val.names[-1] == "009000.jpg"
    assert set(val.names).isdisjoint(test.names)
    assert load_faces(SHARED, "train", image_size=16).names[-1] == "008500.jpg"  # validation held out of train
    with pytest.raises(ConfigError, match="splits 'train', 'val' and 'test'"):
        load_faces(SHARED, "validation")
    with pytest.raises(DataError, match="face archive not found"):
        load_faces(tmp_path, "test")
