"""Latency and throughput of the serving forms of one MRI flow policy, measured side by side.

Runtimes: the ``torch.export`` program (``.pt2``) and the ONNX model (``.onnx``, ONNX Runtime) written by
``flowcs export`` and loaded back as a server would; for comparison the same generator traced by TorchScript
(deprecated in the pinned torch: measured, not shipped) and as an eager module; the training code
(``FlowPolicy.propose`` on the condition) is the baseline. Batch-1 calls of all of them are interleaved in
blocks, so every figure sees the same machine load.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import torch

from .. import export as E
from .timing import load_average, percentiles, time_calls

__all__ = ["serving_forms", "latency_table", "throughput_table", "components"]


def serving_forms(policy, geometry, config: dict, device) -> tuple[dict, Path]:
    """{name: call(kspace, noise) -> (mask, scores)} for every runtime, and the temp folder holding the files."""
    tmp = Path(tempfile.mkdtemp(prefix="flowcs-bench-"))
    forms = {}
    for ext in E.FORMATS:
        E.export_policy(policy, geometry.lf, geometry.k, geometry.size, tmp / f"policy{ext}", config, geometry.pool)
        loaded = E.load_exported(tmp / f"policy{ext}", device=device)
        forms[ext[1:]] = loaded._outputs
    gen = E.build_generator(policy, geometry.lf, geometry.k, geometry.size, geometry.pool).to(device)
    example = (torch.zeros(1, 2, geometry.size, geometry.size, device=device),
               torch.zeros(1, policy.samples, geometry.size, device=device))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(gen, example, check_trace=False))

    def run_traced(k, n):
        with torch.inference_mode():
            return traced(k, n)

    def run_eager(k, n):
        with torch.inference_mode():
            return gen(k, n)

    forms["torchscript"] = run_traced
    forms["eager"] = run_eager
    return forms, tmp


def latency_table(calls: dict, runs: int, baseline_runs: int, warmup: int, sync=None) -> dict:
    """Batch-1 wall and CPU percentiles of every call, measured in interleaved blocks (the baseline gets fewer)."""
    for fn in calls.values():
        time_calls(fn, 0, warmup, sync)
    wall = {n: [] for n in calls}
    cpu = {n: [] for n in calls}
    blocks = max(1, min(runs, 10))
    for b in range(blocks):
        for name, fn in calls.items():
            total = baseline_runs if name == "training_code" else runs
            n = total // blocks + (1 if b < total % blocks else 0)
            offset = len(wall[name])
            w, c = time_calls(lambda i, o=offset, f=fn: f(o + i), n, 0, sync)
            wall[name] += w
            cpu[name] += c
    out = {}
    for name in calls:
        p = percentiles(wall[name])
        p["cpu_p50_ms"] = percentiles(cpu[name])["p50_ms"]
        out[name] = p
    out["load_during"] = load_average()
    return out


def throughput_table(forms: dict, kspace: torch.Tensor, samples: int, batches: list[int], sync=None,
                     seconds: float = 2.0) -> dict:
    """Masks per second of every runtime at each batch size (repeated calls for ``seconds``)."""
    out: dict = {}
    n_in = kspace.shape[0]
    for name, fn in forms.items():
        out[name] = {}
        for bs in batches:
            kb = kspace[torch.arange(bs) % n_in]
            nb = E.noise_for(bs, samples, kspace.shape[-1], seed=bs).to(kspace.device)
            fn(kb, nb)
            reps, t0 = 0, time.perf_counter()
            while reps < 3 or (time.perf_counter() - t0 < seconds and reps < 500):
                fn(kb, nb)
                if sync:
                    sync()
                reps += 1
            el = time.perf_counter() - t0
            out[name][str(bs)] = {"masks_per_s": round(bs * reps / el, 1), "ms_per_call": round(1000 * el / reps, 3),
                                  "calls": reps}
    return out


def components(policy, geometry, kspace1: torch.Tensor, noise1: torch.Tensor, runs: int, sync=None) -> dict:
    """Wall / CPU p50 of each step of the eager generator: condition, encoder, Euler steps, top-k."""
    gen = E.build_generator(policy, geometry.lf, geometry.k, geometry.size, geometry.pool).to(kspace1.device)
    with torch.inference_mode():
        cond = gen.condition(kspace1)
        feats = gen.features(cond)
        scores = gen.integrate(feats, noise1)
        parts = {"zero_filled_condition": lambda i: gen.condition(kspace1), "encoder": lambda i: gen.features(cond),
                 "euler_steps": lambda i: gen.integrate(feats, noise1), "topk": lambda i: gen.topk(scores)}
        timed = {name: time_calls(fn, runs, 2, sync) for name, fn in parts.items()}
    return {"wall_p50_ms": {n: percentiles(w)["p50_ms"] for n, (w, _) in timed.items()},
            "cpu_p50_ms": {n: percentiles(c)["p50_ms"] for n, (_, c) in timed.items()}}
