"""The Markdown page of a benchmark (``latency.md`` beside ``latency.json``)."""

from __future__ import annotations

__all__ = ["bench_markdown"]


def bench_markdown(payload: dict) -> str:
    env = payload["environment"]
    lines = ["# Mask-generation benchmark", "",
             f"`{payload['command']}`", "",
             f"CPU: {env['cpu_model']} ({env['cpu_count']} logical CPUs), torch {env['torch_version']}, "
             f"{env['torch_threads']} intra-op thread(s), device {env['device']}. "
             f"Load average (1/5/15 min) before: {payload['load_before']}, after: {payload['load_after']} "
             "(a shared machine: other jobs compete for the cores, so wall-clock figures are upper bounds; "
             "`cpu p50` is the calling thread's CPU time).", ""]
    for name, r in payload["runs"].items():
        le, lb = r["latency_batch1"]["exported"], r["latency_batch1"]["training_code"]
        lines += [f"## {name} ({r['image_size'][0]}×{r['image_size'][1]}, {r['lines']['low_frequency']} LF + "
                  f"{r['lines']['policy']} chosen of {r['columns']} lines; {r['flow']['steps']} Euler steps × "
                  f"{r['flow']['samples']} samples)", "",
                  "| batch-1 latency | p50 ms | p90 ms | p99 ms | cpu p50 ms | n |", "|---|---|---|---|---|---|"]
        for label, p in (("exported (TorchScript)", le), ("training code (FlowPolicy)", lb)):
            lines.append(f"| {label} | {p['p50_ms']:.2f} | {p['p90_ms']:.2f} | {p['p99_ms']:.2f} | "
                         f"{p['cpu_p50_ms']:.2f} | {p['n']} |")
        lines += ["", f"Speed-up at p50: {r['latency_batch1']['speedup_p50']}×; exported masks equal to the "
                      f"training code's: {r['exported_masks_equal_training_code']}. "
                  "Components (exported, wall / cpu p50 ms): "
                  + ", ".join(f"{k} {v:.2f} / {r['components_cpu_p50_ms'][k]:.2f}"
                              for k, v in r["components_p50_ms"].items()) + ".", "",
                  "| batch | masks/s | ms per call |", "|---|---|---|"]
        for b, t in r["throughput_exported"].items():
            lines.append(f"| {b} | {t['masks_per_s']} | {t['ms_per_call']} |")
        lines += ["", "| Euler steps | p50 ms | p99 ms | cpu p50 ms | SSIM | PSNR | masks = most-steps masks |",
                  "|---|---|---|---|---|---|---|"]
        for s, row in r["steps"].items():
            eq = next((v for kk, v in row.items() if kk.startswith("masks_equal")), "")
            lat = row["latency_batch1"]
            lines.append(f"| {s} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} | {lat.get('cpu_p50_ms', '')} | "
                         f"{row.get('ssim_mean', '')} | {row.get('psnr_mean', '')} | {eq} |")
        pe = r["peers"]
        lines += ["", "| policy | ms per mask | ms per acquired line | ratio to flow (per line) | weights |",
                  "|---|---|---|---|---|",
                  f"| flow (exported) | {le['p50_ms']:.2f} | {pe['flow_ms_per_line']} | 1 | trained |",
                  f"| flow (training code) | {lb['p50_ms']:.2f} | {pe['flow_training_code_ms_per_line']} | "
                  f"{round(lb['p50_ms'] / le['p50_ms'], 2)} | trained |"]
        if "ads" in pe:
            lines.append(f"| ADS | {pe['ads']['ms_per_mask']} | {pe['ads']['ms_per_line']} | "
                         f"{pe['ads_over_flow_per_line']} | {pe['ads']['weights']} |")
        if "adps" in pe:
            lines.append(f"| A-DPS | {pe['adps']['latency_batch1']['p50_ms']} | {pe['adps']['ms_per_line']} | "
                         f"{pe['adps_over_flow_per_line']} | {pe['adps']['weights']} |")
        if "serving_rss" in r:
            rss = r["serving_rss"]
            lines += ["", "Peak RSS of a mask-serving process: "
                      + ", ".join(f"{k} {v.get('peak_rss_mb', 0):.0f} MB" for k, v in rss.items()
                                  if isinstance(v, dict)) + (f" ({rss['error']})" if "error" in rss else "") + "."]
        lines.append("")
    if "image_policy" in payload:
        ip = payload["image_policy"]
        p = ip["latency_batch1"]
        lines += [f"## {ip['experiment']} flow policy ({ip['path']})", "",
                  f"{ip['first_pixels']} random pixels + {ip['budget_pixels']} chosen, {ip['steps']} Euler steps: "
                  f"batch-1 p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms (cpu p50 {p['cpu_p50_ms']:.2f} ms).", ""]
    return "\n".join(lines)
