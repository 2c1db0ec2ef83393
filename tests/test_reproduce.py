"""``flowcs reproduce``: the plan's order, the scheduler's limits, a dirty tree refused, one real smoke pass."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowcs import reproduce
from flowcs.errors import FlowcsError
from flowcs.reproduce import ABLATION, EXPERIMENTS, Step, execute, plan

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def test_plan_runs_compare_after_run_and_the_bench_alone_after_everything():
    steps = plan(list(EXPERIMENTS), False, Path("results"), Path("runs"), "cpu")
    names = [s.name for s in steps]
    assert len(steps) == 2 * len(EXPERIMENTS) + 2 + 1 and names[-1] == "bench"  # + one native step per MRI run
    for exp in EXPERIMENTS:
        run, compare = steps[names.index(f"{exp}: run")], steps[names.index(f"{exp}: compare")]
        assert compare.after == [run.name]
        assert run.args[:2] == ["run", exp] and compare.args[:2] == ["compare", exp]
        assert ("--ablation" in run.args) == (exp in ABLATION)
        for s in (run, compare):  # same run dir, same results folder, one thread, never --smoke
            assert s.args[s.args.index("--run-dir") + 1] == str(Path("runs") / exp)
            assert s.args[s.args.index("--results") + 1] == str(Path("results") / exp)
            assert s.args[s.args.index("--threads") + 1] == "1" and "--smoke" not in s.args
    for exp in ("mri-4x", "mri-8x"):  # the same run's policies on each test image's own grid
        native = steps[names.index(f"{exp}: native")]
        assert native.args[:2] == ["mri", "evaluate"] and native.after == [f"{exp}: run"]
        assert native.args[native.args.index("--run-dir") + 1] == str(Path("runs") / exp)
        assert native.args[native.args.index("--out") + 1] == str(Path("results") / "mri-native" / f"{exp}.json")
    bench = steps[-1]
    assert bench.alone and bench.ok == (0,) and set(bench.after) == set(names[:-1])
    assert bench.args[bench.args.index("--image-run") + 1] == str(Path("runs") / "mnist-classify")
    assert float(bench.args[bench.args.index("--wait-quiet") + 1]) > 0
    assert [bench.args[i + 1] for i, a in enumerate(bench.args) if a == "--run-dir"] == ["runs/mri-8x", "runs/mri-4x"]
    # no MRI experiment: nothing to benchmark
    assert [s.name for s in plan(["mnist-recon"], True, Path("r"), Path("w"), "cpu")] == \
        ["mnist-recon: run", "mnist-recon: compare"]
    smoke_bench = plan(["mri-8x"], True, Path("r"), Path("w"), "cpu")[-1]
    assert smoke_bench.ok == (0, 3) and "--smoke" in smoke_bench.args


class _FakeLaunch:
    """Replaces ``_launch``: each step sleeps briefly in a child process and exits with a chosen code; records the
    (start, end) of every step so the scheduler's limits can be checked."""

    def __init__(self, codes: dict[str, int] | None = None):
        self.codes = codes or {}
        self.spans: dict[str, list[float]] = {}

    def __call__(self, step, log_dir, resume):
        self.spans[step.name] = [time.time()]
        code = self.codes.get(step.name, 0)
        return subprocess.Popen([sys.executable, "-c", f"import time, sys; time.sleep(0.6); sys.exit({code})"])


def _steps() -> list[Step]:
    return [Step("a: run", ["run"]), Step("b: run", ["run"]), Step("c: run", ["run"]),
            Step("a: compare", ["compare"], after=["a: run"]),
            Step("bench", ["bench"], after=["a: run", "b: run", "c: run", "a: compare"], alone=True)]


def _overlaps(spans, name) -> list[str]:
    s0, s1 = spans[name]
    return [o for o, (t0, t1) in spans.items() if o != name and t0 < s1 and s0 < t1]


def test_execute_keeps_order_jobs_and_alone(tmp_path, monkeypatch):
    fake = _FakeLaunch()
    monkeypatch.setattr(reproduce, "_launch", fake)
    state: dict = {"steps": {}}
    execute(_steps(), jobs=2, log_dir=tmp_path, state=state, resume=False, save=lambda: None)
    # a step's recorded end (start + wall_s) is when the scheduler noticed it: never earlier than the real end
    ends = {name: fake.spans[name][0] + s["wall_s"] for name, s in state["steps"].items()}
    for name in fake.spans:
        fake.spans[name].append(ends[name])
    assert all(s["ok"] and s["exit_code"] == 0 for s in state["steps"].values()) and len(state["steps"]) == 5
    assert fake.spans["a: compare"][0] >= fake.spans["a: run"][1] - 0.05
    assert _overlaps(fake.spans, "bench") == []
    starts = sorted(t0 for t0, _ in fake.spans.values())
    for t in starts:  # never more than 2 at once
        assert sum(t0 <= t < t1 for t0, t1 in fake.spans.values()) <= 2


def test_execute_stops_at_a_failed_step_and_resume_skips_what_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "_launch", _FakeLaunch({"b: run": 2}))
    state: dict = {"steps": {}}
    with pytest.raises(FlowcsError, match=r"step 'b: run' failed \(exit 2\).*--resume"):
        execute(_steps(), jobs=1, log_dir=tmp_path, state=state, resume=False, save=lambda: None)
    assert state["steps"]["a: run"]["ok"] and not state["steps"]["b: run"]["ok"]
    assert "bench" not in state["steps"]
    fake = _FakeLaunch()
    monkeypatch.setattr(reproduce, "_launch", fake)
    execute(_steps(), jobs=1, log_dir=tmp_path, state=state, resume=True, save=lambda: None)
    assert "a: run" not in fake.spans and {"b: run", "bench"} <= set(fake.spans)
    assert all(s["ok"] for s in state["steps"].values())


def test_a_dirty_tree_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    from flowcs.cli import main

    monkeypatch.setattr(reproduce, "git_commit", lambda: "abc123-dirty")
    launched = []
    monkeypatch.setattr(reproduce, "_launch", lambda *a: launched.append(a))
    code = main(["reproduce", "mri-8x", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "res")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not launched and not (tmp_path / "res").exists()
    assert err[-1].startswith("flowcs: error: the code (src/, configs/, pyproject.toml) has uncommitted changes")
    assert main(["reproduce", "mri-9x"]) == 2
    assert "unknown experiment 'mri-9x'" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_smoke_writes_every_result_from_one_commit(tmp_path):
    """One real pass (mri-8x smoke: run, compare, bench): the files a user gets, each naming the same commit."""
    if not (SHARED / "mri_complex_kellman_fatwater").is_dir():
        pytest.skip(f"{SHARED / 'mri_complex_kellman_fatwater'} is absent (the MRI training data)")
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "flowcs", "reproduce", "mri-8x", "--smoke", "--allow-dirty",
                           "--device", "cpu", "--runs", str(runs)], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = runs / "results"
    rep = json.loads((out / "reproduce.json").read_text())
    assert set(rep["steps"]) == {"mri-8x: run", "mri-8x: compare", "mri-8x: native", "bench"}
    assert all(s["ok"] for s in rep["steps"].values()) and rep["smoke"] and rep["wall_s"] > 0
    commit = rep["git_commit"]
    run = json.loads((out / "mri-8x" / "run.json").read_text())
    assert run["git_commit"] == commit
    metrics = json.loads((out / "mri-8x" / "metrics.json").read_text())
    compare = json.loads((out / "mri-8x" / "compare.json").read_text())
    assert metrics["selected_on"] == "val" and metrics["split"] == "test" and compare["selected_on"] == "val"
    native = json.loads((out / "mri-native" / "mri-8x.json").read_text())
    assert native["git_commit"] == commit and native["split"] == "test"
    assert {im["name"] for im in native["images"]} >= {"brain_alias_8ch.mat"}
    assert all(len(r["ssim"]["per_image"]) == len(native["images"]) for r in native["policies"].values())
    bench = json.loads((out / "bench" / "latency.json").read_text())
    assert bench["git_commit"] == commit and "valid" in bench and bench["runs"]["mri-8x"]["latency_batch1"]
    assert (runs / "logs" / "bench.log").is_file()


def test_resume_counts_commits_with_the_same_code_as_one(tmp_path, monkeypatch):
    """Committing results between two sessions keeps the reproduction's finished steps; a code change does not."""
    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    git("add", "."), git("commit", "-qm", "code")
    first = git("rev-parse", "HEAD")
    (tmp_path / "results.json").write_text("{}\n")
    git("add", "."), git("commit", "-qm", "results")
    results = git("rev-parse", "HEAD")
    (tmp_path / "src" / "a.py").write_text("x = 2\n")
    git("commit", "-qam", "change")
    changed = git("rev-parse", "HEAD")
    monkeypatch.chdir(tmp_path)
    assert reproduce.same_code(first, first) and reproduce.same_code(first, results)
    assert not reproduce.same_code(first, changed) and not reproduce.same_code(results, changed)
    assert not reproduce.same_code(first + "-dirty", results) and not reproduce.same_code("", results)


def test_the_longest_runs_start_first():
    steps = plan(list(reversed(EXPERIMENTS)), False, Path("results"), Path("runs"), "cpu")
    runs = [s.name for s in steps if s.name.endswith(": run")]
    assert runs[:2] == ["mnist-classify: run", "mri-8x: run"]
    assert sorted(runs) == sorted(f"{e}: run" for e in EXPERIMENTS)


def test_resume_under_other_code_reuses_no_checkpoint(tmp_path, monkeypatch):
    """--resume with a reproduce.json of other code: no step counts as done and no training resumes."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "reproduce.json").write_text(json.dumps({"git_commit": "aaaa", "steps": {"mnist-recon: run": {"ok": True}}}))
    seen = {}
    monkeypatch.setattr(reproduce, "git_commit", lambda: "bbbb")
    monkeypatch.setattr(reproduce, "same_code", lambda old, new: old == new)
    monkeypatch.setattr(reproduce, "execute", lambda steps, jobs, log_dir, state, resume, save:
                        seen.update(resume=resume, done=dict(state["steps"])))
    args = reproduce.add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(
        ["mnist-recon", "--resume", "--runs", str(tmp_path / "runs"), "--out", str(out)])
    assert reproduce.run(args) == 0
    assert seen == {"resume": False, "done": {}}
    monkeypatch.setattr(reproduce, "git_commit", lambda: "aaaa")  # the same code: both count
    (out / "reproduce.json").write_text(json.dumps({"git_commit": "aaaa", "steps": {"mnist-recon: run": {"ok": True}}}))
    assert reproduce.run(args) == 0
    assert seen["resume"] is True and seen["done"] == {"mnist-recon: run": {"ok": True}}
