import os
import pickle

import pytest
import torch

from flowcs.errors import CheckpointError, FlowcsError
from flowcs.io import atomic_write, torch_load_safe, write_json
from flowcs.training.checkpoint import load_checkpoint, newest_valid, save_checkpoint


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as fh:
            fh.write('{"a": 2, "half')
            raise RuntimeError("disk full")
    assert target.read_text().strip().startswith('{\n  "a": 1')
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)


def test_failing_writer_keeps_prior_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "flow.pt"
    save_checkpoint(path, "flow", {"w": 1}, {"model": {"x": torch.ones(2)}, "done": True})

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(FlowcsError, match="No space left on device"):
        save_checkpoint(path, "flow", {"w": 1}, {"model": {"x": torch.zeros(2)}, "done": True})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path, "flow")["model"]["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.pt"]


def test_checkpoint_kind_and_signature_mismatch(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, "unet", {"widths": [32, 64, 128]}, {"model": {}})
    with pytest.raises(CheckpointError, match="holds a 'unet' model, expected 'flow'"):
        load_checkpoint(path, "flow")
    with pytest.raises(CheckpointError, match="does not match the configuration: widths"):
        load_checkpoint(path, "unet", {"widths": [8, 16, 32]})


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        torch_load_safe(path)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        torch_load_safe(raw)


def test_truncated_checkpoint_skipped_for_previous(tmp_path):
    cur, prev = tmp_path / "flow.pt", tmp_path / "flow.prev.pt"
    save_checkpoint(prev, "flow", {}, {"model": {}, "global_step": 5})
    save_checkpoint(cur, "flow", {}, {"model": {}, "global_step": 9})
    data = cur.read_bytes()
    cur.write_bytes(data[: len(data) // 2])
    os.utime(cur)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(cur)
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"):
        path, ckpt = newest_valid([cur, prev], "flow")
    assert path == prev and ckpt["global_step"] == 5


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
