"""The Markdown page of a benchmark (``latency.md`` beside ``latency.json``)."""

from __future__ import annotations

__all__ = ["bench_markdown"]

RUNTIME_LABELS = {"pt2": "torch.export program (.pt2)", "onnx": "ONNX Runtime (.onnx)",
                  "torchscript": "TorchScript trace (comparison)", "eager": "eager generator (comparison)",
                  "training_code": "training code (FlowPolicy)"}


def _run_section(name: str, r: dict) -> list[str]:
    lat, tp = r["latency_batch1"], r["throughput"]
    f = r["flow"]
    lines = [f"## {name} ({r['image_size'][0]}×{r['image_size'][1]}, {r['lines']['low_frequency']} LF + "
             f"{r['lines']['policy']} chosen of {r['columns']} lines; {f['steps']} Euler step(s) × {f['samples']} "
             f"sample(s), condition pooled ×{f['encoder_pool']})", "",
             "| runtime | batch-1 p50 ms | p90 ms | p99 ms | cpu p50 ms | masks/s b1 | b16 | b64 | masks = training "
             "code |", "|---|---|---|---|---|---|---|---|---|"]
    for key, label in RUNTIME_LABELS.items():
        p = lat[key]
        t = tp.get(key, {})
        cells = [t.get(b, {}).get("masks_per_s", "–") for b in ("1", "16", "64")]
        lines.append(f"| {label} | {p['p50_ms']:.2f} | {p['p90_ms']:.2f} | {p['p99_ms']:.2f} | {p['cpu_p50_ms']:.2f} "
                     f"| {' | '.join(str(c) for c in cells)} | {r['masks_equal_training_code'].get(key, '–')} |")
    comp = r["components"]
    lines += ["", "Components of one batch-1 mask (eager generator, wall / cpu p50 ms): "
              + ", ".join(f"{k} {v:.3f} / {comp['cpu_p50_ms'][k]:.3f}" for k, v in comp["wall_p50_ms"].items())
              + f". Files: {r['file_mb']} MB. Fastest batch-1 runtime: {r['serving_runtime']['fastest_batch1']}.", ""]
    if "quality" in r:
        q = r["quality"]
        m = q["metric"]
        lines += [f"Speed–quality on {q['images']} {q['split']} images × {q['seeds']} draws (reference "
                  f"{q['reference']}, paired):", "",
                  f"| setting | {m} | {m} − reference [95 % CI] | masks = reference | mean pairwise IoU |",
                  "|---|---|---|---|---|"]
        for setting, row in q["rows"].items():
            lo, hi = row["ci95_minus_reference"]
            lines.append(f"| {setting} | {row[f'{m}_mean']:.4f} | {row[f'{m}_minus_reference']:+.4f} "
                         f"[{lo:+.4f}, {hi:+.4f}] | {row['masks_equal_to_reference']} | {row['mean_pairwise_iou']} |")
        lines.append("")
    pe = r["peers"]
    lines += ["| policy | ms per mask | ms per acquired line | ratio to the flow (per line) | weights |",
              "|---|---|---|---|---|",
              f"| flow (pt2) | {lat['pt2']['p50_ms']:.2f} | {pe['flow_ms_per_line']} | 1 | trained |"]
    if "ads" in pe:
        lines.append(f"| ADS | {pe['ads']['ms_per_mask']} | {pe['ads']['ms_per_line']} | "
                     f"{pe['ads_over_flow_per_line']} | {pe['ads']['weights']} |")
    if "adps" in pe:
        lines.append(f"| A-DPS | {pe['adps']['latency_batch1']['p50_ms']} | {pe['adps']['ms_per_line']} | "
                     f"{pe['adps_over_flow_per_line']} | {pe['adps']['weights']} |")
    if "serving_rss" in r:
        rss = r["serving_rss"]
        lines += ["", "Peak RSS of a mask-serving process: "
                  + ", ".join(f"{k} {v.get('peak_rss_mb', 0):.0f} MB" for k, v in rss.items() if isinstance(v, dict))
                  + (f" ({rss['error']})" if "error" in rss else "") + "."]
    return [*lines, ""]


def bench_markdown(payload: dict) -> str:
    env = payload["environment"]
    rule = payload.get("load_rule", f"every load average below {payload['max_load_average']}")
    validity = ("valid: " if payload["valid"] else "**NOT VALID**, the machine was busy; rule: ") + rule
    lines = ["# Mask-generation benchmark", "", f"`{payload['command']}` at commit `{payload['git_commit']}`", "",
             f"CPU: {env['cpu_model']} ({env['cpu_count']} logical CPUs), torch {env['torch_version']}, "
             f"{env['torch_threads']} intra-op thread(s), device {env['device']}. Load average (1/5/15 min) before: "
             f"{payload['load_before']}, after: {payload['load_after']} ({validity}). `cpu p50` is the calling "
             "thread's CPU time.", "",
             f"Top-level figures ({payload['policy']}, {payload['runtime']}, batch 1, {payload['threads']} thread(s)): "
             f"p50 {payload['p50_ms']:.2f} ms, p99 {payload['p99_ms']:.2f} ms; "
             f"{payload['masks_per_s_batch64'] or 'n/a'} "
             f"masks/s at batch 64; ADS / flow per line {payload['ads_over_flow_per_line']}.", ""]
    for name, r in payload["runs"].items():
        lines += _run_section(name, r)
    if "image_policy" in payload:
        ip = payload["image_policy"]
        p = ip["latency_batch1"]
        lines += [f"## {ip['experiment']} flow policy ({ip['path']})", "",
                  f"{ip['first_pixels']} random pixels + {ip['budget_pixels']} chosen, {ip['steps']} Euler steps: "
                  f"batch-1 p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms (cpu p50 {p['cpu_p50_ms']:.2f} ms).", ""]
    return "\n".join(lines)
