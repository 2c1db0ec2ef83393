"""Package a trained MRI run as the pretrained policy shipped with flowcs (``src/flowcs/pretrained/<name>/``).

    python scripts/make_pretrained.py runs/reproduce/mri-8x results/mri-8x src/flowcs/pretrained/mri-8x

Keeps what ``flowcs mri mask`` / ``flowcs mri evaluate`` load (config.yaml, experiment.json, the encoder, flow
and MoDL stages), drops the optimiser state and stores the weights as float16 (3.6 MB instead of 19 MB; loading
casts them back to float32), and writes PROVENANCE.json: the run's commit and training data from its results'
run.json, the validation SSIM of the chosen setting (ablation.json) and the test SSIM (metrics.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

STAGES = ("encoder", "flow", "modl")


def strip(src: Path, dst: Path) -> None:
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if not ckpt.get("done"):
        raise SystemExit(f"{src}: stage not finished")
    model = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()}
    keep = {k: ckpt[k] for k in ("format", "kind", "signature", "global_step", "done", "loop")}
    torch.save({**keep, "model": model, "optimizer": None, "world_size": 1, "rank_param_checksums": None}, dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("results", type=Path, help="the run's committed results folder (run.json, ablation.json, ...)")
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    run = json.loads((a.results / "run.json").read_text())
    if run["git_commit"].endswith("-dirty"):
        raise SystemExit(f"{a.results}/run.json records a dirty commit; ship only runs of committed code")
    ablation = json.loads((a.results / "ablation.json").read_text())
    metrics = json.loads((a.results / "metrics.json").read_text())
    a.out.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "experiment.json"):
        shutil.copy(a.run_dir / name, a.out / name)
    for stage in STAGES:
        strip(a.run_dir / f"{stage}.pt", a.out / f"{stage}.pt")
    winner = ablation["winner"]
    provenance = {
        "experiment": run["experiment"], "git_commit": run["git_commit"], "command": run["command"],
        "device": run["device"], "training_data": run["data_source"]["train"],
        "data_note": run["data_source"]["note"],
        "validation": {"split": ablation["split"], "images": ablation["data"]["images"], "setting": winner,
                       "ssim": ablation["policies"][winner]["mean"][0]},
        "test": {"images": metrics["policies"]["flow"]["n"], "ssim_flow": metrics["policies"]["flow"]["mean"][0],
                 "ssim_central_block": metrics["policies"]["low-frequency"]["mean"][0]},
        "weights": "float16 (cast to float32 on load); optimiser state dropped",
        "packaged_by": "scripts/make_pretrained.py",
    }
    (a.out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    total = sum(p.stat().st_size for p in a.out.iterdir())
    print(f"{a.out}: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
