"""``flowcs reproduce [EXPERIMENT ...]``: regenerate everything committed under ``results/`` from one clean commit.

For every experiment: ``flowcs run EXPERIMENT`` (train every stage from scratch, evaluate on the test split; with
``--ablation`` where the experiment's grid is committed), then ``flowcs compare EXPERIMENT`` (peers trained by this
run, never loaded from an earlier one); for the MRI runs also ``flowcs mri evaluate`` (the same policies on each
test image's own grid, ``results/mri-native/``); after all of them, ``flowcs bench`` on the MRI runs, alone.
Each step is a separate ``flowcs`` process (up to ``--jobs`` at a time, one thread each), so a step sees exactly
what a user typing its command would. The code — ``src/``, ``configs/``, ``pyproject.toml`` — must be committed
(the commit in every ``run.json`` is then the code that ran; results and docs may change meanwhile);
``--allow-dirty`` runs anyway and marks ``reproduce.json`` so. ``--resume`` skips the steps that finished under
the same code (a commit whose ``src/``, ``configs/`` and ``pyproject.toml`` equal HEAD's: committing results
between sessions does not restart it) and resumes interrupted training; when ``reproduce.json`` records other
code (or nothing), every step starts from scratch, so no checkpoint of other code is reused. ``--smoke`` runs the
smoke presets into ``--out`` (default: a ``reproduce-smoke`` folder under ``--runs``) in a few minutes.

Writes ``<out>/reproduce.json``: the commit, every step's command, exit code and wall time, and the total.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, FlowcsError
from .runinfo import CODE_PATHS, git_commit

__all__ = ["add_parser", "run", "plan", "same_code", "Step", "EXPERIMENTS", "ABLATION"]

EXPERIMENTS = ("mnist-classify", "mnist-recon", "faces-recon", "mri-4x", "mri-8x")
#: experiments whose validation ablation is committed: the issue's full grid (classification, the 8x MRI) and
#: the target x loss choice of the two reconstruction experiments
ABLATION = ("mnist-classify", "mri-8x", "mnist-recon", "faces-recon")
MRI = ("mri-8x", "mri-4x")
#: launch order: the longest runs first (wall times of the last full reproduction on 2 CPU cores: mnist-classify
#: ≈ 86 min, mri-8x ≈ 68 min, the rest ≤ 30 min each), so that the two job slots finish close together
LONGEST_FIRST = ("mnist-classify", "mri-8x", "faces-recon", "mnist-recon", "mri-4x")


@dataclass
class Step:
    name: str
    args: list[str]
    after: list[str] = field(default_factory=list)
    alone: bool = False  # timings: nothing else may run meanwhile
    threads: int = 1
    ok: tuple[int, ...] = (0,)  # exit codes that count as done


def plan(experiments: list[str], smoke: bool, results: Path, runs: Path, device: str) -> list[Step]:
    """The steps (and their order constraints) that regenerate ``results/`` for ``experiments``."""
    steps = []
    common = [*(["--smoke"] if smoke else []), "--device", device, "--threads", "1"]
    for exp in sorted(experiments, key=LONGEST_FIRST.index):
        run_dir, res = str(runs / exp), str(results / exp)
        extra = ["--ablation"] if exp in ABLATION else []
        steps.append(Step(f"{exp}: run", ["run", exp, "--run-dir", run_dir, "--results", res, *common, *extra]))
        steps.append(Step(f"{exp}: compare", ["compare", exp, "--run-dir", run_dir, "--results", res, *common],
                          after=[f"{exp}: run"]))
    mri = [e for e in MRI if e in experiments]
    for exp in mri:  # the same run's policies on every test image's own phase-encode grid
        steps.append(Step(f"{exp}: native", ["mri", "evaluate", "--run-dir", str(runs / exp), "--out",
                                             str(results / "mri-native" / f"{exp}.json"), "--device", device,
                                             *(["--seeds", "1"] if smoke else [])], after=[f"{exp}: run"]))
    if mri:
        bench = ["bench", *[a for e in mri for a in ("--run-dir", str(runs / e))], "--wait-quiet", "600", "--out",
                 str(results / "bench" / "latency.json"), "--device", device]
        if "mnist-classify" in experiments:  # the image flow policy's decision time, same run, same load
            bench += ["--image-run", str(runs / "mnist-classify")]
        ok = (0,)
        if smoke:  # a check of the pipeline, on a machine that may be busy: an invalid timing (exit 3) is recorded
            ok = (0, 3)
            bench[bench.index("--wait-quiet") + 1] = "0"
            bench += ["--smoke", "--runs", "20", "--baseline-runs", "5", "--warmup", "2", "--batches", "1,4",
                      "--steps", "2,4", "--samples", "1,2", "--quality-images", "2", "--quality-seeds", "2", "--no-rss"]
        steps.append(Step("bench", bench, after=[s.name for s in steps], alone=True, ok=ok))
    return steps


def same_code(old: str, new: str) -> bool:
    """True when commits ``old`` and ``new`` hold the same ``src/``, ``configs/`` and ``pyproject.toml``: results
    committed between two sessions of one reproduction (a new HEAD) do not restart it."""
    if old == new:
        return True
    if not old or old.endswith("-dirty") or new.endswith("-dirty"):
        return False
    diff = subprocess.run(["git", "diff", "--quiet", old, new, "--", *CODE_PATHS],
                          capture_output=True)
    return diff.returncode == 0


def _launch(step: Step, log_dir: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(step.threads)}
    args = [*step.args, *(["--resume"] if resume and step.args[0] in ("run", "compare") else [])]
    log = open(log_dir / f"{step.name.replace(': ', '-').replace(' ', '_')}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "flowcs", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()  # the child holds its own handle
    return proc


def execute(steps: list[Step], jobs: int, log_dir: Path, state: dict, resume: bool, save) -> None:
    """Run ``steps`` respecting ``after`` and ``alone``, at most ``jobs`` at a time; record each in ``state``."""
    done = {name for name, s in state["steps"].items() if s.get("ok")} if resume else set()
    pending = [s for s in steps if s.name not in done]
    running: dict[str, tuple[subprocess.Popen, float, Step]] = {}
    while pending or running:
        for name, (proc, t0, step) in list(running.items()):
            if proc.poll() is not None:
                state["steps"][name] = {"command": "flowcs " + " ".join(step.args), "exit_code": proc.returncode,
                                        "ok": proc.returncode in step.ok, "wall_s": round(time.time() - t0, 1)}
                del running[name]
                save()
                if state["steps"][name]["ok"]:
                    done.add(name)  # its dependants may start in this same pass
                if proc.returncode not in step.ok:
                    for other, _t, _s in running.values():
                        other.terminate()
                    raise FlowcsError(f"step '{name}' failed (exit {proc.returncode}); see "
                                      f"{log_dir} (rerun with --resume to continue after fixing it)")
        ready = [s for s in pending if all(a in done for a in s.after)]
        for step in ready:
            if len(running) >= jobs or (running and step.alone) or any(r[2].alone for r in running.values()):
                break
            running[step.name] = (_launch(step, log_dir, resume), time.time(), step)
            pending.remove(step)
            print(f"flowcs reproduce: started {step.name}", file=sys.stderr)
        time.sleep(0.5)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("reproduce", help="regenerate every committed result (main runs, ablations, "
                                                "comparisons, the benchmark) from one clean commit")
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                   help=f"experiments to regenerate (default all: {', '.join(EXPERIMENTS)})")
    p.add_argument("--smoke", action="store_true", help="smoke presets, into --out (a few minutes)")
    p.add_argument("--resume", action="store_true",
                   help="skip steps finished under the same code (src/, configs/, pyproject.toml); resume training")
    p.add_argument("--allow-dirty", action="store_true",
                   help="run with uncommitted code changes (every result then records a '-dirty' commit)")
    p.add_argument("--jobs", type=int, default=2, help="steps run at the same time, one thread each (default 2)")
    p.add_argument("--runs", default="runs/reproduce", metavar="DIR", help="run directories (default runs/reproduce)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="results folder (default results/; with --smoke: <runs>/results)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    return p


def run(args: argparse.Namespace) -> int:
    from .io import write_json

    experiments = list(args.experiments) or list(EXPERIMENTS)
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        raise ConfigError(f"unknown experiment {unknown[0]!r}; choose from {', '.join(EXPERIMENTS)}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    commit = git_commit() or "unknown"
    dirty = commit.endswith("-dirty")
    if dirty and not args.allow_dirty:
        raise ConfigError("the code (src/, configs/, pyproject.toml) has uncommitted changes: commit them first "
                          "(every result records the commit it came from), or pass --allow-dirty")
    runs = Path(args.runs)
    out = Path(args.out) if args.out else (runs / "results" if args.smoke else Path("results"))
    log_dir = runs / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    state_path = out / "reproduce.json"
    state = json.loads(state_path.read_text()) if args.resume and state_path.is_file() else {}
    same = bool(state) and same_code(state.get("git_commit", ""), commit)
    if args.resume and not same:  # other code, or no record of it: neither its steps nor its checkpoints count
        print(f"flowcs reproduce: --resume: {state_path} records no earlier launch of this code; every step "
              "starts from scratch", file=sys.stderr)
        state = {}
    state.update({"command": "flowcs " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else
                  "flowcs reproduce", "git_commit": commit, "allow_dirty": dirty,
                  "experiments": experiments, "smoke": args.smoke})
    state.setdefault("steps", {})
    started = time.time()
    previous = float(state.get("wall_s", 0.0))

    def save():
        state["wall_s"] = round(previous + time.time() - started, 1)
        write_json(state_path, state)

    steps = plan(experiments, args.smoke, out, runs, args.device)
    save()
    execute(steps, args.jobs, log_dir, state, args.resume and same, save)
    save()
    print(f"reproduced {len(steps)} step(s) at {state['git_commit']} in {state['wall_s']:.0f} s → {out} "
          f"({state_path})")
    return 0
