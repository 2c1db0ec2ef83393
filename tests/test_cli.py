"""The CLI end to end: smoke run outputs, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowcs.cli import build_parser, main
from flowcs.registry import available

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "flowcs", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert err and err[-1].startswith("flowcs: error:"), proc.stderr
    for f in fragments:
        assert f in err[-1], err[-1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    shared = (REPO / ".." / "shared" / "data" / "mnist").resolve()
    if not shared.is_dir():
        pytest.skip(f"real data folder absent: {shared}")
    run_dir = tmp_path_factory.mktemp("smoke")
    proc = run_cli("run", "mnist-classify", "--smoke", "--run-dir", str(run_dir), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


def test_smoke_run_writes_schema_figures_and_metadata(smoke_run):
    run_dir, proc = smoke_run
    res = run_dir / "results"
    metrics = json.loads((res / "metrics.json").read_text())
    assert metrics["experiment"] == "mnist-classify" and metrics["metric"] == "accuracy"
    assert metrics["budgets"] == [1.0, 4.0, 8.0] and metrics["budget_unit"] == "percent"
    assert set(metrics["policies"]) == {"flow", "flow+ft", "random", "random-same-total", "full"}
    for row in metrics["policies"].values():
        assert len(row["mean"]) == 3 and all(0 <= m <= 1 for m in row["mean"])
        assert row["n"] == 512
    assert metrics["budget_pixels"] == [8, 31, 63]
    assert "approximate npz" in metrics["data"]["train"]  # says which training-image copy was used
    assert "official IDX t10k-images" in metrics["data"]["test"]
    run = json.loads((res / "run.json").read_text())
    for key in ("config", "seed", "git_commit", "versions", "wall_time_s", "device", "command"):
        assert key in run
    assert run["versions"]["torch"].startswith("2.13.0")
    for fig in ("accuracy_vs_rate.png", "density.png", "masks.png"):
        assert (res / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| flow |" in proc.stdout
    assert not list(res.glob(".*.tmp"))


def test_smoke_resume_is_a_no_op(smoke_run):
    run_dir, _ = smoke_run
    proc = run_cli("train", "mnist-classify", "--smoke", "--run-dir", str(run_dir), "--resume", "--stage", "flow")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_checkpoint_of_another_model_is_refused(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    shutil.copy(bad / "unet.pt", bad / "classifier.pt")
    proc = run_cli("evaluate", "mnist-classify", "--smoke", "--run-dir", str(bad))
    assert_one_line_error(proc, "classifier.pt", "holds a 'unet' model, expected 'classifier'")
    assert not (bad / "results" / "metrics.json.tmp").exists()


def test_rate_out_of_range(tmp_path):
    proc = run_cli("evaluate", "mnist-classify", "--set", "eval.rates=[0, 4]", "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "out of range", "(0, 100]")
    assert proc.returncode == 2
    assert not (tmp_path / "r").exists()


def test_missing_data_dir(tmp_path):
    proc = run_cli("train", "mnist-classify", "--smoke", "--data", str(tmp_path / "nowhere"),
                   "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "nowhere")


def test_corrupt_idx_file(tmp_path):
    mnist = tmp_path / "data" / "mnist"
    mnist.mkdir(parents=True)
    (mnist / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 10)
    (mnist / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02")
    proc = run_cli("train", "mnist-classify", "--smoke", "--data", str(tmp_path / "data"),
                   "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "train-images-idx3-ubyte")
    assert not list((tmp_path / "r").glob("*.pt"))


def test_unknown_config_key_and_experiment(tmp_path):
    proc = run_cli("train", "mnist-classify", "--set", "flow.gate_z=3", "--run-dir", str(tmp_path))
    assert_one_line_error(proc, "flow.gate_z")
    proc = run_cli("train", "cifar-classify")
    assert_one_line_error(proc, "unknown experiment 'cifar-classify'")


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "evaluate", "ablate", "run", "data"):
        assert cmd in out
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("train", "evaluate", "ablate", "run"):
        text = sub.choices[name].format_help()
        assert "--smoke" in text and "--device" in text and "--resume" in text and "--threads" in text
        for experiment in available("experiment"):
            assert experiment in " ".join(text.split())


def test_git_commit_is_the_one_at_the_start_of_the_run(tmp_path, monkeypatch):
    """A commit made while a long run is going must not be recorded as that run's commit."""
    import subprocess

    import torch

    from flowcs.experiments import context
    from flowcs.runinfo import git_commit

    def git(*a):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "f").write_text("1")
    git("add", "f")
    git("commit", "-qm", "one")
    monkeypatch.setattr(context, "git_commit", lambda: git_commit(tmp_path))
    ctx = context.RunContext("demo", None, {}, tmp_path, tmp_path, tmp_path, 0, torch.device("cpu"))
    first = git_commit(tmp_path)
    assert first and len(first) == 40
    (tmp_path / "f").write_text("2")
    git("commit", "-qam", "two")
    assert git_commit(tmp_path) != first
    assert ctx.metadata()["git_commit"] == first


def test_git_commit_is_dirty_only_when_the_code_changes(tmp_path):
    """results/, docs and tests edited while a run goes leave its commit clean; src/, configs/, pyproject do not."""
    import subprocess

    from flowcs.runinfo import git_commit

    def git(*a):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    for rel in ("src/m.py", "configs/c.yaml", "pyproject.toml", "results/r.json", "docs/d.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("1")
    git("add", ".")
    git("commit", "-qm", "one")
    clean = git_commit(tmp_path)
    (tmp_path / "results/r.json").write_text("2")
    (tmp_path / "docs/d.md").write_text("2")
    (tmp_path / "results/new.json").write_text("new")
    assert git_commit(tmp_path) == clean
    for rel in ("src/m.py", "configs/c.yaml", "pyproject.toml", "src/untracked.py"):
        path = tmp_path / rel
        old = path.read_text() if path.exists() else None
        path.write_text("changed")
        assert git_commit(tmp_path) == clean + "-dirty", rel
        path.write_text(old) if old is not None else path.unlink()
    assert git_commit(tmp_path) == clean
