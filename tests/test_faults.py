"""Fault injection: damaged files, NaN/Inf, a full disk, killed processes, a malicious pickle.

Every fault must end in a clear one-line message (or, for SIGKILL, no message at all) and leave the
prior state intact: the previous file, the last good checkpoint, a resumable run. docs/reliability.md
lists each fault with what the user sees and what is preserved; the test named there covers it.
Tests marked ``xfail(strict=True)`` document bugs that are not fixed yet (the reason says which);
they start failing (XPASS) the day the fix lands, so the marker gets removed.

The CLI tests train on a tiny synthetic MNIST folder (written here), so they need no shared data.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from flowcs.cli import main
from flowcs.data.fastmri import read_volume_images
from flowcs.data.images import load_image_folder, read_rgb
from flowcs.data.inspect import inspect_path
from flowcs.data.mnist import read_idx
from flowcs.data.synthetic import write_fastmri_volume
from flowcs.errors import CheckpointError, DataError, FlowcsError
from flowcs.evaluation.tables import write_results
from flowcs.io import save_with, torch_load_safe, torch_save, write_json, write_text
from flowcs.training import loop as loop_module
from flowcs.training.checkpoint import load_checkpoint, newest_valid, save_checkpoint
from flowcs.training.loop import Interrupted, LoopConfig, fit

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


# ----------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def flipped(raw: bytes, pos: int, bits: int = 0xFF) -> bytes:
    b = bytearray(raw)
    b[pos] ^= bits
    return bytes(b)


def enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A tiny MNIST folder (768 train / 256 test random digits; un-gzipped names, so no md5 check); runs on it
    hold 128 of the 768 out for validation (``SMALL_VAL``)."""
    root = tmp_path_factory.mktemp("data")
    mnist = root / "mnist"
    mnist.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 768), ("t10k", 256)):
        (mnist / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(rng.integers(0, 256, (n, 28, 28))))
        (mnist / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(rng.integers(0, 10, n)))
    return root


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err[-3000:]
    assert lines and lines[-1].startswith("flowcs: error: "), err[-3000:]
    return lines[-1]


# ----------------------------------------------------------------------------- damaged data files


def test_idx_gz_every_byte_flip_is_caught_or_harmless(tmp_path):
    """gzip's CRC covers the data: a flipped byte is a one-line DataError, or (header flags/mtime) no change."""
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28))
    raw = gzip.compress(idx_bytes(images), mtime=0)
    path = tmp_path / "digits-idx3-ubyte.gz"
    for pos in range(0, len(raw), 3):
        path.write_bytes(flipped(raw, pos))
        try:
            out = read_idx(path)
        except DataError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            continue
        assert np.array_equal(out, images), f"byte {pos}: silently different data"


def test_idx_raw_header_flips_and_truncations_are_one_line_errors(tmp_path):
    """Raw IDX has no checksum: the header is validated (magic, type, dims vs size); pixels cannot be."""
    raw = idx_bytes(np.zeros((2, 28, 28)))
    path = tmp_path / "digits-idx3-ubyte"
    for pos in range(16):
        path.write_bytes(flipped(raw, pos))
        with pytest.raises(DataError, match=re.escape(str(path))):
            read_idx(path)
    for cut in (0, 3, 10, 16, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(DataError, match="truncated"):
            read_idx(path)


def test_official_mnist_name_catches_any_flip_by_md5(tmp_path):
    raw = gzip.compress(idx_bytes(np.arange(10)), mtime=0)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(flipped(raw, 12, 0x01))
    with pytest.raises(DataError, match="md5 .* differs from the official MNIST release"):
        read_idx(path)


@pytest.fixture(scope="module")
def h5_volume(tmp_path_factory) -> Path:
    return write_fastmri_volume(tmp_path_factory.mktemp("h5") / "vol.h5", n_slices=2, rows=16, cols=12, seed=0)


def _h5_metadata_positions(path: Path) -> range:
    import h5py

    with h5py.File(path, "r") as f:
        first_data = min(f[k].id.get_offset() or 0 for k in f)  # everything before is superblock/headers/B-trees
    return range(0, first_data, 9)


def test_h5_truncated_anywhere_is_a_one_line_error(h5_volume, tmp_path):
    raw = h5_volume.read_bytes()
    bad = tmp_path / "cut.h5"
    for cut in (0, 8, 100, 1000, len(raw) // 2, len(raw) - 1):
        bad.write_bytes(raw[:cut])
        with pytest.raises(DataError, match=re.escape(f"{bad}: ")):
            read_volume_images(bad)


def test_inspect_reports_any_corrupt_h5_metadata_byte_as_a_problem(h5_volume, tmp_path):
    raw = h5_volume.read_bytes()
    bad = tmp_path / "flip.h5"
    for pos in _h5_metadata_positions(h5_volume):
        bad.write_bytes(flipped(raw, pos))
        report = inspect_path(bad)  # never a traceback
        for p in report.problems:
            assert p.startswith(f"{bad}: ") and "\n" not in p


def test_h5_loader_turns_any_corrupt_metadata_byte_into_a_data_error(h5_volume, tmp_path):
    raw = h5_volume.read_bytes()
    bad = tmp_path / "flip.h5"
    escaped = []
    for pos in _h5_metadata_positions(h5_volume):
        bad.write_bytes(flipped(raw, pos))
        try:
            read_volume_images(bad)
        except DataError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point of the test
            escaped.append(f"byte {pos}: {type(exc).__name__}")
    assert not escaped, escaped[:10]


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return folder


def test_jpeg_in_an_image_folder_truncated_names_the_file(jpeg_folder, tmp_path):
    for p in jpeg_folder.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    victim = tmp_path / "000001.jpg"
    raw = victim.read_bytes()
    for cut in (0, 2, 100, len(raw) // 2, len(raw) - 2):
        victim.write_bytes(raw[:cut])
        with pytest.raises(DataError, match=re.escape(f"{victim}: unreadable image")):
            load_image_folder(tmp_path)
    assert inspect_path(tmp_path).problems[0].startswith(f"{victim}: unreadable image")


def test_jpeg_every_byte_flip_is_an_error_or_an_rgb_image(jpeg_folder, tmp_path):
    """JPEG has no checksum: a flip may decode to other pixels, but never crashes outside DataError."""
    raw = (jpeg_folder / "000000.jpg").read_bytes()
    path = tmp_path / "x.jpg"
    for pos in range(0, len(raw), 4):
        path.write_bytes(flipped(raw, pos))
        try:
            img = read_rgb(path)
        except DataError as exc:
            assert str(exc).startswith(f"{path}: ")
            continue
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def _checkpoint(path: Path, step: int = 1, value: float = 1.0) -> None:
    save_checkpoint(path, "tiny", {"w": 1}, {"model": {"w": torch.full((256,), value)}, "global_step": step})


def test_checkpoint_every_byte_flip_is_a_checkpoint_error_or_loads(tmp_path):
    path = tmp_path / "tiny.pt"
    _checkpoint(path)
    raw = path.read_bytes()
    bad = tmp_path / "bad.pt"
    for pos in range(0, len(raw), 11):
        bad.write_bytes(flipped(raw, pos))
        try:
            load_checkpoint(bad)
        except CheckpointError as exc:
            assert str(exc).startswith(f"{bad}: ") and "\n" not in str(exc)


def test_truncated_checkpoint_anywhere_falls_back_to_the_previous_one(tmp_path):
    cur, prev = tmp_path / "tiny.pt", tmp_path / "tiny.prev.pt"
    _checkpoint(prev, step=4)
    _checkpoint(cur, step=8)
    raw = cur.read_bytes()
    for cut in (0, 30, len(raw) // 3, len(raw) - 30):
        cur.write_bytes(raw[:cut])
        os.utime(cur)
        with pytest.warns(UserWarning, match="skipping unusable checkpoint: .*tiny.pt: corrupt or truncated"):
            path, ckpt = newest_valid([cur, prev], "tiny")
        assert path == prev and ckpt["global_step"] == 4


def test_checkpoint_with_a_flipped_weight_byte_is_refused_and_skipped(tmp_path):
    cur, prev = tmp_path / "tiny.pt", tmp_path / "tiny.prev.pt"
    _checkpoint(prev, step=4, value=1.0)
    _checkpoint(cur, step=8, value=1.0)
    raw = cur.read_bytes()
    pos = raw.index(np.full(256, 1.0, np.float32).tobytes()) + 513  # inside the tensor data record
    cur.write_bytes(flipped(raw, pos, 0x40))
    os.utime(cur)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path, ckpt = newest_valid([cur, prev], "tiny")
    assert path == prev, f"corrupt weights loaded silently: {ckpt['model']['w'][120:136]}"


# ----------------------------------------------------------------------------- a tiny training run, in process


class Tiny(nn.Module):
    """y ≈ w·x with per-step noise from the loop's generator (and optional dropout from the global RNG)."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, y, poison: bool = False, generator=None):
        noise = torch.randn(x.shape, generator=generator)
        pred = self.lin(self.drop(x + 0.1 * noise)).squeeze(1)
        loss = ((pred - y) ** 2).mean()
        if poison:  # finite loss, NaN gradient: d/dw sqrt(|w - w|) at 0
            w = self.lin.weight
            loss = loss + torch.sqrt((w - w.detach()).abs().sum())
        return {"loss": loss}


X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.3
CFG = LoopConfig(epochs=2, batch_size=8, lr=1e-2, checkpoint_every=3, log_every=100)  # 16 steps


def train_tiny(out: Path, *, dropout=0.0, resume=False, on_step=None, poison_step=None, data=(X, Y)):
    torch.manual_seed(0)  # as the experiments do before building a stage's model
    obj = Tiny(dropout)
    calls = {"n": 0}
    x, y = data

    def batch_fn(idx, _gen):
        step = calls["n"]
        calls["n"] += 1
        if on_step is not None:
            on_step(step)
        return {"x": x[idx], "y": y[idx], "poison": step == poison_step}

    fit(obj, batch_fn, x.shape[0], CFG, out_dir=out, name="tiny", signature={"model": "tiny"}, seed=0,
        device=torch.device("cpu"), resume=resume)
    return load_checkpoint(out / "tiny.pt", "tiny")


def same_weights(a: dict, b: dict) -> bool:
    return a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k])
                                                          for k in a["model"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return train_tiny(tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_checkpoint_and_resume_matches_an_uninterrupted_run(sig, reference, tmp_path):
    handler = signal.getsignal(sig)
    with pytest.raises(Interrupted) as exc:
        train_tiny(tmp_path, on_step=lambda s: s == 5 and os.kill(os.getpid(), sig))
    msg = str(exc.value)
    assert exc.value.exit_code == 130 and "\n" not in msg
    assert msg == (f"tiny: stopped by signal {int(sig)} at step 6/16; checkpoint saved to {tmp_path / 'tiny.pt'} "
                   "(rerun with --resume to continue)")
    ckpt = load_checkpoint(tmp_path / "tiny.pt", "tiny")
    assert ckpt["global_step"] == 6 and ckpt["done"] is False
    assert signal.getsignal(sig) is handler  # the loop restored the previous handler
    final = train_tiny(tmp_path, resume=True)
    assert final["done"] and final["global_step"] == 16
    assert same_weights(final, reference)


def test_resume_with_dropout_matches_an_uninterrupted_run(tmp_path):
    ref = train_tiny(tmp_path / "ref", dropout=0.3)
    with pytest.raises(Interrupted):
        train_tiny(tmp_path / "run", dropout=0.3, on_step=lambda s: s == 5 and os.kill(os.getpid(), signal.SIGTERM))
    assert same_weights(train_tiny(tmp_path / "run", dropout=0.3, resume=True), ref)


def test_crash_between_the_rename_and_the_new_checkpoint_resumes_from_prev(reference, tmp_path, monkeypatch):
    """save() moves <name>.pt to <name>.prev.pt, then writes the new one: die in between → prev is used."""
    real, calls = loop_module.save_checkpoint, {"n": 0}

    def dies_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise SystemExit("killed")
        return real(*a, **k)

    monkeypatch.setattr(loop_module, "save_checkpoint", dies_on_second)
    with pytest.raises(SystemExit):
        train_tiny(tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / "tiny.pt").exists()
    assert load_checkpoint(tmp_path / "tiny.prev.pt", "tiny")["global_step"] == 3
    assert same_weights(train_tiny(tmp_path, resume=True), reference)


def test_disk_full_while_checkpointing_keeps_the_last_good_one_and_resume_matches(reference, tmp_path,
                                                                                  monkeypatch):
    real, calls = loop_module.save_checkpoint, {"n": 0}

    def full_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            with monkeypatch.context() as m:
                m.setattr(os, "fsync", enospc)
                return real(*a, **k)
        return real(*a, **k)

    monkeypatch.setattr(loop_module, "save_checkpoint", full_on_second)
    with pytest.raises(FlowcsError, match="No space left on device"):
        train_tiny(tmp_path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".jsonl") == ["tiny.prev.pt"]  # no temp file
    assert load_checkpoint(tmp_path / "tiny.prev.pt", "tiny")["global_step"] == 3
    assert same_weights(train_tiny(tmp_path, resume=True), reference)


def test_nan_inputs_stop_training_with_the_last_good_checkpoint(tmp_path):
    x = X.clone()
    x[40:48] = float("nan")  # the batches holding these rows give a NaN loss
    with pytest.raises(FlowcsError) as exc:
        train_tiny(tmp_path, data=(x, Y))
    msg = str(exc.value)
    assert re.fullmatch(rf"tiny: loss became nan at step \d+; last good checkpoint kept at "
                        rf"{re.escape(str(tmp_path / 'tiny.pt'))} \(lower the learning rate\?\)", msg), msg
    ckpt = load_checkpoint(tmp_path / "tiny.pt", "tiny")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_nan_gradients_never_overwrite_the_last_good_checkpoint(tmp_path):
    # a step with a finite loss but NaN gradients is skipped (weights untouched); the run finishes
    ckpt = train_tiny(tmp_path, poison_step=4)
    assert ckpt["done"] and ckpt["global_step"] == 16
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    clean = train_tiny(tmp_path / "clean")
    assert not torch.equal(ckpt["model"]["lin.weight"], clean["model"]["lin.weight"])  # step 4 really skipped


# ----------------------------------------------------------------------------- a full disk


def _writers(tmp_path):
    arr = np.arange(6.0)
    return {
        "results json": (tmp_path / "metrics.json", lambda p, v: write_json(p, {"v": v})),
        "results md": (tmp_path / "metrics.md", lambda p, v: write_text(p, f"| v | {v} |\n")),
        "checkpoint": (tmp_path / "flow.pt", lambda p, v: torch_save(p, {"v": torch.tensor(v)})),
        "export npy": (tmp_path / "masks.npy", lambda p, v: save_with(p, lambda fh: np.save(fh, arr * v))),
        "export png": (tmp_path / "fig.png", lambda p, v: save_with(p, lambda fh: fh.write(b"\x89PNG" + bytes([v])))),
    }


@pytest.mark.parametrize("what", ["results json", "results md", "checkpoint", "export npy", "export png"])
def test_disk_full_leaves_the_previous_file(what, tmp_path, monkeypatch):
    path, write = _writers(tmp_path)[what]
    write(path, 1)
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", enospc)  # the data reached the page cache; flushing it fails
    with pytest.raises(FlowcsError, match="No space left on device"):
        write(path, 2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the temporary file is gone


def test_disk_full_in_the_middle_of_a_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "masks.npy"
    save_with(path, lambda fh: np.save(fh, np.arange(3)))

    def half_then_full(fh):
        fh.write(b"\x93NUMPY half")
        enospc()

    with pytest.raises(FlowcsError, match="No space left on device"):
        save_with(path, half_then_full)
    assert np.array_equal(np.load(path), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_results_directory_is_never_half_written(tmp_path, monkeypatch):
    payload = {"experiment": "x", "metric": "accuracy", "higher_is_better": True, "budget_unit": "percent",
               "budgets": [4.0], "policies": {"random": {"mean": [0.5], "std": [0.0]}}}
    write_results(tmp_path, "metrics", payload, {"seed": 0})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    new = {**payload, "policies": {"random": {"mean": [0.9], "std": [0.0]}}}
    real_fsync, calls = os.fsync, {"n": 0}

    def full_after_first_file(fd):  # the disk fills up after metrics.json was staged
        calls["n"] += 1
        if calls["n"] >= 2:
            enospc()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_after_first_file)
    with pytest.raises(FlowcsError, match="No space left on device"):
        write_results(tmp_path, "metrics", new, {"seed": 1})
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before, "metrics.json changed but metrics.md / run.json did not"


def test_disk_full_at_the_cli_is_a_one_line_error(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "fsync", enospc)
    code = main(["train", "mnist-classify", "--smoke", "--stage", "classifier", "--device", "cpu",
                 "--run-dir", str(tmp_path / "run"), "--data", str(data_root)])
    line = one_line_error(capsys.readouterr().err)
    assert code != 0 and "No space left on device" in line and "config.yaml" in line


@pytest.mark.parametrize("override,key", [("classifier.loop.batch_size=0", "batch_size"),
                                          ("classifier.loop.checkpoint_every=0", "checkpoint_every"),
                                          ("classifier.loop.lr=.nan", "lr"),
                                          ("classifier.loop.epochs=-1", "epochs")])
def test_bad_loop_values_are_config_errors_before_any_work(override, key, data_root, tmp_path, capsys):
    code = main(["train", "mnist-classify", "--smoke", "--stage", "classifier", "--device", "cpu",
                 "--run-dir", str(tmp_path / "run"), "--data", str(data_root), "--set", override])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and key in line
    assert not list((tmp_path / "run").glob("*.pt"))


# ----------------------------------------------------------------------------- killed processes (the real CLI)


def test_sigkill_during_a_checkpoint_write_leaves_the_old_checkpoint(tmp_path):
    path, marker = tmp_path / "tiny.pt", tmp_path / "in-fsync"
    _checkpoint(path, step=1, value=1.0)
    child = textwrap.dedent(f"""
        import os, time, torch
        from flowcs.training.checkpoint import save_checkpoint
        def stuck(fd):
            open({str(marker)!r}, "w").close()
            time.sleep(120)
        os.fsync = stuck
        save_checkpoint({str(path)!r}, "tiny", {{"w": 1}}, {{"model": {{"w": torch.zeros(256)}}, "global_step": 2}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], env=ENV)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None and time.time() < deadline, "child never reached fsync"
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait(timeout=60)
    ckpt = load_checkpoint(path, "tiny")
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["model"]["w"], torch.ones(256))
    found = newest_valid([path, tmp_path / "tiny.prev.pt"], "tiny")
    assert found is not None and found[0] == path  # a stale temporary sibling is never picked


SMALL_VAL = ["--set", "data.val_size=128"]  # the default 5,000 does not fit in 768 images
UNET = ["--set", "unet.loop.steps_per_epoch=10", "--set", "unet.loop.checkpoint_every=2", *SMALL_VAL]


def flowcs(*args, data_root: Path, popen: bool = False):
    cmd = [sys.executable, "-m", "flowcs", *args, "--data", str(data_root), "--device", "cpu"]
    if popen:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)


def train_unet(run: Path, data_root: Path, *extra, popen=False):
    return flowcs("train", "mnist-classify", "--smoke", "--stage", "unet", "--run-dir", str(run), *UNET, *extra,
                  data_root=data_root, popen=popen)


@pytest.fixture(scope="module")
def unet_reference(data_root, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("unet-ref")
    proc = train_unet(run, data_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_checkpoint(run / "unet.pt", "unet")


def kill_when(proc: subprocess.Popen, ready, sig: int) -> tuple[int, str]:
    """Send ``sig`` to ``proc`` as soon as ``ready()`` holds; its exit code and stderr."""
    deadline = time.time() + 300
    while not ready():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"training ended before the moment to signal it: {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.slow
def test_cli_sigterm_then_sigkill_then_resume_matches_an_uninterrupted_run(unet_reference, data_root, tmp_path):
    run = tmp_path / "run"
    cur, prev = run / "unet.pt", run / "unet.prev.pt"
    # 1. SIGTERM once the first checkpoint exists: one line, exit 130, a checkpoint at that step
    code, err = kill_when(train_unet(run, data_root, popen=True), cur.exists, signal.SIGTERM)
    line = one_line_error(err)
    assert code == 130, err[-3000:]
    m = re.fullmatch(rf"flowcs: error: unet: stopped by signal 15 at step (\d+)/10; checkpoint saved to "
                     rf"{re.escape(str(cur))} \(rerun with --resume to continue\)", line)
    assert m, line
    step = int(m.group(1))
    ckpt = load_checkpoint(cur, "unet")
    assert ckpt["global_step"] == step < 10 and not ckpt["done"]
    assert yaml.safe_load((run / "config.yaml").read_text())["unet"]["loop"]["checkpoint_every"] == 2
    # 2. --resume, SIGKILLed as soon as it starts its next checkpoint (unet.pt has just become unet.prev.pt):
    #    no message is possible; the newest complete checkpoint is intact, whichever file holds it
    inode = cur.stat().st_ino
    code, err = kill_when(train_unet(run, data_root, "--resume", popen=True),
                          lambda: prev.exists() and prev.stat().st_ino == inode, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert f"[unet] resumed from {cur} at step {step}/10" in err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing on disk is corrupt
        path, ckpt = newest_valid([cur, prev], "unet")
    assert step <= ckpt["global_step"] < 10 and not ckpt["done"]
    json.loads((run / "data_sources.json").read_text())
    yaml.safe_load((run / "config.yaml").read_text())
    # 3. --resume again: the same final weights as a run that was never interrupted
    proc = train_unet(run, data_root, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"[unet] resumed from {path} at step {ckpt['global_step']}/10" in proc.stderr
    final = load_checkpoint(cur, "unet")
    assert final["done"] and final["global_step"] == 10
    assert same_weights(final, unet_reference)


# ----------------------------------------------------------------------------- a malicious pickle


class _Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_by_the_cli_and_never_runs(data_root, tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    torch.save({"format": "flowcs-checkpoint-1", "kind": "classifier", "signature": {}, "done": True,
                "model": _Evil(marker)}, run / "classifier.pt")
    code = main(["evaluate", "mnist-classify", "--smoke", "--device", "cpu", "--run-dir", str(run),
                 "--data", str(data_root), *SMALL_VAL])
    line = one_line_error(capsys.readouterr().err)
    assert code == 1 and not marker.exists()
    assert line.startswith(f"flowcs: error: {run / 'classifier.pt'}: refused to load: the file contains objects "
                           "other than tensors and plain data")
    assert not (run / "results" / "metrics.json").exists()
    # --resume skips it with a warning (never unpickling it) and trains from scratch
    with pytest.warns(UserWarning, match="skipping unusable checkpoint: .*refused to load"):
        code = main(["train", "mnist-classify", "--smoke", "--stage", "classifier", "--resume", "--device", "cpu",
                     "--run-dir", str(run), "--data", str(data_root), *SMALL_VAL])
    assert code == 0 and not marker.exists()
    assert load_checkpoint(run / "classifier.pt", "classifier")["done"]


def test_exported_tensors_load_but_code_does_not(tmp_path):
    """torch_load_safe is what every checkpoint / exported policy goes through."""
    good, evil, marker = tmp_path / "policy.pt", tmp_path / "evil.pt", tmp_path / "pwned"
    torch_save(good, {"scores": torch.arange(4.0), "meta": {"k": [1, 2]}})
    assert torch.equal(torch_load_safe(good)["scores"], torch.arange(4.0))
    torch.save([_Evil(marker)], evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        torch_load_safe(evil)
    assert not marker.exists()
