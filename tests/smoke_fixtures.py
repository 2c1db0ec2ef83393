"""Every experiment's smoke numbers, recorded as fixtures so that moving code cannot change a result by accident.

``python tests/smoke_fixtures.py`` (from the repository root) reruns ``flowcs run EXP --smoke`` and
``flowcs compare EXP --smoke`` for every built-in experiment (one thread, CPU, seed 0; ≈ 3 minutes) and
writes the numbers they produced to ``tests/fixtures/smoke/<experiment>.{metrics,compare}.json``.
``tests/test_smoke_fixtures.py`` reruns the same commands and compares. Regenerate only in a commit that
*means* to change numbers, and say why in its message.

Kept: every field of ``metrics.json`` / ``compare.json`` except those that describe the machine, the time
or the files of one run (:data:`VOLATILE`).

The numbers are exact only on the floating-point platform that wrote them (``platform.json``: torch, its CPU
kernel level and the CPU model): the same code on another CPU generation moves the smoke numbers by up to ≈ 5 %
(a few dozen training steps amplify last-bit differences of the MKL/oneDNN kernels; measured between the fixtures
of 8887879 and 04c9ac8). There the test checks the structure and every ``mean`` within :data:`OTHER_PLATFORM_REL`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "smoke"
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
EXPERIMENTS = ("mnist-classify", "mnist-recon", "faces-recon", "mri-4x", "mri-8x")
#: top-level keys whose values depend on the machine, the clock or the run's paths
VOLATILE = frozenset({"decision_time_ms", "wall_time_s", "training", "task", "data", "notes", "config", "protocol",
                      "flow_policy_ms_per_slice", "first_measurement", "trained_per_budget", "test_ids"})


#: relative tolerance of the ``mean`` values on another floating-point platform (observed drift ≤ 0.053)
OTHER_PLATFORM_REL = 0.15


def platform() -> dict:
    """What decides the smoke numbers' last bits besides the code: torch, its CPU kernel level, the CPU model."""
    import platform as _platform

    import torch

    cpu = _platform.processor()
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in info[:30] if ":" in line)}
        family, model = fields.get("cpu family", "?"), fields.get("model", "?")
        cpu = f"{fields.get('model name', cpu)} (family {family}, model {model})"
    except OSError:
        pass
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu}


def _cli(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLOWCS_DATA": str(SHARED_DATA)}
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "flowcs", *args, "--threads", "1", "--device", "cpu"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"flowcs {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def numbers(payload: dict) -> dict:
    """The part of a results payload that a code move must not change."""
    return {k: v for k, v in payload.items() if k not in VOLATILE}


def run_smoke(experiment: str, root: Path) -> dict[str, dict]:
    """Smoke run + smoke comparison of ``experiment`` under ``root``; returns ``{"metrics": …, "compare": …}``."""
    run_dir = root / experiment
    _cli("run", experiment, "--smoke", "--run-dir", str(run_dir))
    _cli("compare", experiment, "--smoke", "--run-dir", str(run_dir), "--results", str(run_dir / "compare"))
    return {"metrics": numbers(json.loads((run_dir / "results" / "metrics.json").read_text())),
            "compare": numbers(json.loads((run_dir / "compare" / "compare.json").read_text()))}


def fixture_path(experiment: str, kind: str) -> Path:
    return FIXTURES / f"{experiment}.{kind}.json"


def _tree_differences(got, want, where: str, leaf) -> list[str]:
    """The same keys and list lengths everywhere; ``leaf(got, want, where)`` compares everything else."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}.{k}: missing" for k in want if k not in got]
        out += [f"{where}.{k}: unexpected" for k in got if k not in want]
        return out + [d for k in want if k in got for d in _tree_differences(got[k], want[k], f"{where}.{k}", leaf)]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: length {len(got)} != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _tree_differences(g, w, f"{where}[{i}]", leaf)]
    return leaf(got, want, where)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def differences(got, want, where: str = "", tol: float = 1e-6) -> list[str]:
    """Human-readable differences between two JSON trees (numbers within ``tol``, relative or absolute)."""
    def leaf(g, w, at):
        if _is_number(w) and isinstance(g, (int, float)):
            return [] if math.isclose(float(g), float(w), rel_tol=tol, abs_tol=tol) else [f"{at}: {g!r} != {w!r}"]
        return [] if g == w else [f"{at}: {g!r} != {w!r}"]

    return _tree_differences(got, want, where, leaf)


def loose_differences(got, want, where: str = "", rel: float = OTHER_PLATFORM_REL) -> list[str]:
    """Another platform's check: the same keys and list lengths everywhere, every ``mean`` value within ``rel``
    (other numbers, flags and verdicts derived from near-equal means may move and are not compared)."""
    def leaf(g, w, at):
        if not (at.split(".")[-1].startswith("mean") and _is_number(w)):
            return []
        ok = isinstance(g, (int, float)) and math.isclose(float(g), float(w), rel_tol=rel, abs_tol=1e-3)
        return [] if ok else [f"{at}: {g!r} != {w!r} (rel {rel})"]

    return _tree_differences(got, want, where, leaf)


def main() -> int:
    import tempfile

    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for exp in EXPERIMENTS:
            print(f"{exp} ...", flush=True)
            for kind, payload in run_smoke(exp, Path(tmp)).items():
                fixture_path(exp, kind).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    (FIXTURES / "platform.json").write_text(json.dumps(platform(), indent=1, sort_keys=True) + "\n")
    print(f"written {FIXTURES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
