"""Run directories: one process at a time (lock, stale lock taken over), leftovers of killed runs removed, a run
read with its own configuration, one-line messages that repeat the user's own command, signatures that refuse a
changed objective, SIGTERM before training starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flowcs.data.mri_files import read_cfl, write_cfl
from flowcs.errors import CheckpointError, DataError
from flowcs.rundir import LOCK_NAME
from flowcs.training.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "FLOWCS_DATA": str(SHARED)}
QUICK = ["--smoke", "--stage", "classifier", "--set", "classifier.loop.epochs=1", "--device", "cpu"]


def flowcs(*args, popen: bool = False, env: dict | None = None):
    cmd = [sys.executable, "-m", "flowcs", *args]
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, cwd=REPO, env=env or ENV, capture_output=True, text=True, timeout=600)


def last_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("flowcs: error: "), err[-3000:]
    return lines[-1]


@pytest.fixture(autouse=True)
def need_mnist():
    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED / 'mnist'}")


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    run = tmp_path / "run"
    first = flowcs("train", "mnist-classify", *QUICK, "--run-dir", str(run), "--set", "classifier.loop.epochs=6",
                   popen=True)
    deadline = time.time() + 120
    while not (run / LOCK_NAME).exists():
        assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
        time.sleep(0.05)
    second = flowcs("train", "mnist-classify", *QUICK, "--run-dir", str(run))
    line = last_line(second.stderr)
    assert second.returncode == 2 and f"in use by process {first.pid}" in line and str(run) in line
    assert first.wait(timeout=300) == 0, first.communicate()[1][-2000:]
    assert not (run / LOCK_NAME).exists()  # released at exit
    logs = (run / "classifier.log.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in logs] == sorted({json.loads(ln)["step"] for ln in logs})  # one writer


def test_a_lock_left_by_a_killed_process_is_taken_over_and_leftovers_removed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "command": "flowcs x"}))
    stale = run / ".classifier.pt.k3j2.tmp"
    stale.write_bytes(b"half a checkpoint")
    proc = flowcs("train", "mnist-classify", *QUICK, "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"taking over the lock of process {dead.pid}" in proc.stderr
    assert "removed 1 temporary file(s) left by an interrupted run" in proc.stderr
    assert not stale.exists() and (run / "classifier.pt").is_file() and not (run / LOCK_NAME).exists()


def test_resume_without_a_checkpoint_says_so(tmp_path):
    proc = flowcs("train", "mnist-classify", *QUICK, "--run-dir", str(tmp_path / "run"), "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[classifier] --resume: no usable checkpoint in" in proc.stderr and "from the start" in proc.stderr


def test_smoke_run_is_read_with_its_own_config_and_messages_repeat_the_command(tmp_path):
    run = tmp_path / "run"
    missing = flowcs("evaluate", "mnist-classify", "--smoke", "--run-dir", str(run), "--device", "cpu")
    line = last_line(missing.stderr)
    assert missing.returncode == 2 and "has not been trained yet" in line
    assert f"flowcs train mnist-classify --smoke --run-dir {run}" in line  # the user's own --smoke and --run-dir
    assert not run.exists()  # reading a run that is not there creates nothing
    assert flowcs("run", "mnist-classify", "--smoke", "--run-dir", str(run), "--device", "cpu",
                  "--set", "eval.rates=[4.0]").returncode == 0
    # evaluated without --smoke: the run's config.yaml gives the smoke network sizes, results stay in the run
    again = flowcs("evaluate", "mnist-classify", "--run-dir", str(run), "--device", "cpu")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run / "results" / "metrics.json").read_text())["budgets"] == [4.0]


def test_unknown_stage_is_a_usage_error():
    proc = flowcs("train", "mnist-classify", "--stage", "flw", "--run-dir", "/nonexistent/never")
    assert proc.returncode == 2 and "unknown stage 'flw'" in last_line(proc.stderr)


def test_a_changed_flow_objective_is_refused_on_resume(tmp_path):
    run = tmp_path / "run"
    stages = ["--stage", "classifier", "--stage", "unet", "--stage", "flow"]
    gate = ["--set", "flow.objective=gate", "--set", "flow.target=self"]  # a gate objective, whose loss can change
    assert flowcs("train", "mnist-classify", "--smoke", *stages, "--run-dir", str(run), "--device", "cpu",
                  *gate, "--set", "flow.loss=task").returncode == 0
    proc = flowcs("train", "mnist-classify", "--smoke", "--stage", "flow", "--run-dir", str(run), "--device", "cpu",
                  "--resume", *gate, "--set", "flow.loss=both")
    line = last_line(proc.stderr)
    assert proc.returncode == 1 and "loss='task' (expected 'both')" in line and "flow.pt" in line
    # a run folder written before the objective was recorded: refused, naming the setting
    ckpt = load_checkpoint(run / "flow.pt", "flow")
    old = {k: v for k, v in ckpt["signature"].items() if k != "loss"}
    save_checkpoint(run / "old.pt", "flow", old, {"model": {}})
    with pytest.raises(CheckpointError, match="loss not recorded"):
        load_checkpoint(run / "old.pt", "flow", ckpt["signature"])


def test_sigterm_while_data_is_loading_is_one_line(tmp_path):
    if not (SHARED / "faces_celeba_10k").is_dir():
        pytest.skip("real data folder absent: faces_celeba_10k")
    run = tmp_path / "run"
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # no decoded-face cache: loading takes seconds
    proc = flowcs("train", "faces-recon", "--run-dir", str(run), "--device", "cpu", popen=True, env=env)
    deadline = time.time() + 120
    while not (run / LOCK_NAME).exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in last_line(err) and not list(run.glob("*.pt")) and not (run / LOCK_NAME).exists()


def test_read_cfl_rejects_nan_and_inf(tmp_path):
    a = (np.arange(12) + 1j).astype(np.complex64).reshape(3, 4)
    write_cfl(tmp_path / "ok", a)
    assert np.array_equal(read_cfl(tmp_path / "ok").squeeze(), a)  # BART pads the dims to 16
    for bad in (np.nan, np.inf):
        b = a.copy()
        b[1, 2] = bad
        write_cfl(tmp_path / "bad", b)
        with pytest.raises(DataError, match=r"bad\.cfl.*NaN/Inf"):
            read_cfl(tmp_path / "bad")
