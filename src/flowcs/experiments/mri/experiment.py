"""MRI acceleration with the low-frequency-first flow policy (paper §2.6.3, §3.3, Table 1, Fig. 5–6; SPEC §1–5).

One class, two registered experiments:

* ``mri-4x``: 128 × 128 images, 4× acceleration (32 of 128 lines), low-frequency band 8 % (10 lines);
* ``mri-8x``: 208 × 208 images, 8× acceleration (26 of 208 lines), low-frequency band 4 % (8 lines).

The LF band counts **inside** the acceleration budget (as in fastMRI masks): a policy chooses
``round(W / acceleration) − |LF band|`` further columns. ``evaluate`` reconstructs every policy's measurement
with the same frozen MoDL: zero-filled (random mask, no network), random (LF + uniform), equispaced,
variable-density, flow, low-frequency (the budget as the lines nearest the centre: a wider LF band, the
reference a centre-heavy learned policy has to beat), and ``full`` (all lines).

Data (``data.source``): ``kellman`` (default; the real complex images of ``../shared/data`` split by file,
plus the ESPIRiT brain slice as an extra test image) or ``fastmri`` (a folder of single-coil ``.h5`` volumes
split by volume; tests use synthetic files in that layout).
"""

from __future__ import annotations

import time

import torch

from ...acquisition import BandFirst
from ...errors import ConfigError
from ...evaluation.loop import Entry, MaskEvent, evaluate
from ...evaluation.results import image_row, mean_pairwise_iou
from ...evaluation.setup import Setup, Split, TrainData
from ...evaluation.tables import metrics_payload, tables_markdown, write_results
from ...metrics import nmse, psnr, ssim
from ...operators.fft import complex_abs
from ...policies.cartesian import EquispacedPolicy, LowFrequencyPolicy, VariableDensityPolicy
from ...policies.random import RandomPolicy
from ...training.distributed import all_reduce_sum, merge_dicts
from ..ablation import run_flow_ablation
from ..base import Experiment
from ..context import RunContext
from . import stages as S
from .config import SMOKE, Config, Config8x, validate
from .data import Geometry, describe_data, load_splits, prepare, set_threads
from .figures import write_figures

__all__ = ["MRIExperiment", "POLICY_ORDER", "MRI_4X", "MRI_8X"]

POLICY_ORDER = ("zero-filled", "random", "equispaced", "variable-density", "flow", "low-frequency", "full")


def _magnitude_metrics(vol_range: torch.Tensor) -> dict:
    """Per-image SSIM / PSNR / NMSE of magnitudes: per slice (data range = the slice's max, fastMRI) and per
    volume (data range = the volume's max, ``*_vol``)."""

    def mags(pred, target):
        return complex_abs(pred)[:, 0].double(), target.double()

    def vr(rows):
        return vol_range[rows.cpu()].to(torch.float64)

    return {"ssim": lambda p, t, rows: ssim(*mags(p, t)), "psnr": lambda p, t, rows: psnr(*mags(p, t)),
            "nmse": lambda p, t, rows: nmse(*mags(p, t)),
            "ssim_vol": lambda p, t, rows: ssim(*mags(p, t), vr(rows).to(p.device)),
            "psnr_vol": lambda p, t, rows: psnr(*mags(p, t), vr(rows).to(p.device))}


class MRIExperiment(Experiment):
    stages = ("encoder", "modl-pretrain", "modl", "flow")
    smoke = SMOKE

    def __init__(self, name: str, config_class: type):
        self.name, self.config_class = name, config_class

    def validate(self, cfg: Config) -> None:
        validate(cfg)

    def geometry(self, cfg: Config) -> Geometry:
        """Operator, LF band and line budget of a configuration (no trained model needed)."""
        return Geometry.from_cfg(cfg)

    # ------------------------------------------------------------------ training

    def training_sample(self, ctx: RunContext, n: int):
        train = load_splits(ctx, ("train",))["train"]
        x = prepare(train, range(min(n, len(train))), ctx.cfg)
        return x, x

    def training_data(self, ctx: RunContext):
        set_threads(ctx.cfg)
        splits = load_splits(ctx, ("train", "val", "test"))
        ctx.record_data_sources(describe_data(ctx, splits))
        return splits["train"]

    def train_stage(self, ctx: RunContext, stage: str, train_set) -> None:
        geometry = Geometry.from_cfg(ctx.cfg)
        if stage == "encoder":
            obj = S.EncoderObjective(S.make_encoder_net(ctx.cfg), geometry).to(ctx.device)
            S.fit_images(ctx, stage, obj, ctx.cfg.encoder.loop, train_set, ctx.cfg.encoder.repeat)
        elif stage in ("modl-pretrain", "modl"):
            m = ctx.cfg.modl
            net = S.make_modl(ctx.cfg, m.pretrain_unrolls if stage == "modl-pretrain" else m.unrolls)
            if stage == "modl":  # fine-tuning starts from the pretrained weights (a resume overrides them)
                S.load_stage(ctx, "modl-pretrain", net, S.signature(ctx, "modl-pretrain"))
            obj = S.MoDLObjective(S.MRIReconstructionTask(net, m.ssim_weight), geometry, m.vd_fraction, m.vd_power)
            S.fit_images(ctx, stage, obj.to(ctx.device), m.pretrain if stage == "modl-pretrain" else m.finetune,
                         train_set, m.repeat)
        elif stage == "flow":
            S.train_flow(ctx, geometry, train_set)

    # ------------------------------------------------------------------ what the evaluation sees

    def flow_policy(self, ctx: RunContext, flow_cfg=None, stage: str = "flow"):
        return S.trained_flow(ctx, flow_cfg, stage)

    def ablate(self, ctx: RunContext) -> dict:
        """Rounds × target × loss (and the gate rows) on the validation images (:mod:`..ablation`)."""
        set_threads(ctx.cfg)
        train = load_splits(ctx, ("train",))["train"]
        geometry = Geometry.from_cfg(ctx.cfg)
        return run_flow_ablation(self, ctx, lambda flow_cfg, stage: S.train_flow(ctx, geometry, train, flow_cfg,
                                                                                stage))

    def setup(self, ctx: RunContext, split: str | None = None, train: bool = False) -> Setup:
        set_threads(ctx.cfg)
        c = ctx.cfg
        geometry = Geometry.from_cfg(c)
        task = S.trained_modl(ctx)
        split = split or c.eval.split
        wanted = ("train", split) if train else (split,)
        splits = load_splits(ctx, wanted)
        images = splits[split]
        if len(images) == 0:
            raise ConfigError(f"the {split} split is empty")
        x_all = prepare(images, range(len(images)), c)
        mag_all = complex_abs(x_all)[:, 0]
        vols = list(images.volumes)
        vol_max = {v: max(float(mag_all[i].max()) for i in range(len(vols)) if vols[i] == v) for v in set(vols)}
        vol_range = torch.tensor([vol_max[v] for v in vols], dtype=torch.float64)
        train_data = None
        if train:
            tr = splits["train"]
            if len(tr) == 0:
                raise ConfigError(f"{ctx.experiment}: the train split is empty")

            def batch(idx, gen, tr=tr):
                x = prepare(tr, idx % len(tr), c, gen).to(ctx.device)
                return x, x  # the task's loss compares complex images

            train_data = TrainData(len(tr) * c.modl.repeat, batch, tr.describe())
        m = c.mri
        return Setup(
            experiment=ctx.experiment, operator=geometry.operator, task=task, first=BandFirst(geometry.lf),
            condition=geometry.condition_fn(),
            test=Split(x_all, mag_all, list(images.names), vols, images.describe(), split),
            budgets=[geometry.k], budget_values=[m.acceleration], budget_unit="acceleration",
            metrics=_magnitude_metrics(vol_range), primary="ssim", higher_is_better=True, noisy=m.noise_pct > 0,
            train=train_data, task_files=[ctx.checkpoint("modl")], flow_rates=(100.0 * geometry.k / geometry.size,) * 2,
            prior_shift_scale=(0.0, float(prepare(splits["train"], range(min(len(splits["train"]), 16)), c).std()))
            if train else (0.0, 1.0),
            protocol=(f"{ctx.experiment}: {m.size}x{m.size} normalised complex images, k-space noise "
                      f"{m.noise_pct:g}% per channel, frozen MoDL (stage 'modl'); SSIM/PSNR/NMSE of magnitudes "
                      f"per slice (data range = slice max)"),
            table_metrics=["ssim", "psnr", "nmse"], extras={"geometry": geometry, "split": split})

    def entries(self, ctx: RunContext, setup: Setup) -> dict[str, Entry]:
        n = setup.operator.n_locations
        return {"random": Entry(RandomPolicy(n), readers={"random": setup.task.predict,
                                                          "zero-filled": lambda zf, mask_image: zf}),
                "equispaced": Entry(EquispacedPolicy(n)),
                "variable-density": Entry(VariableDensityPolicy(n, ctx.cfg.eval.vd_power)),
                "flow": Entry(self.flow_policy(ctx)), "low-frequency": Entry(LowFrequencyPolicy(n))}

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, ctx: RunContext) -> dict:
        c = ctx.cfg
        setup = self.setup(ctx)
        geometry, split = setup.extras["geometry"], setup.extras["split"]
        n_img, n_cols = len(setup.test), geometry.size
        entries = self.entries(ctx, setup)
        density = {p: torch.zeros(n_cols) for p in entries}
        flow_masks = torch.zeros(n_img, n_cols, dtype=torch.bool)
        fig: dict = {}

        def on_masks(ev: MaskEvent) -> None:
            (b, mask), = ev.masks.items()
            density[ev.name] += (mask & ~ev.acquired).float().sum(0).cpu()
            if ev.seed_index:
                return
            if ev.name == "flow":
                flow_masks[ev.rows] = mask.cpu()
            hit = (ev.rows == c.eval.figure_image).nonzero().flatten()
            if hit.numel():
                fi = int(hit[0])
                fig[ev.name] = {"mask": mask[fi].cpu(), "zf": complex_abs(ev.zero_filled[b][fi:fi + 1])[0, 0].cpu(),
                                "pred": complex_abs(ev.predictions[(ev.name, b)][fi:fi + 1])[0, 0].cpu(),
                                "target": setup.test.y[int(ev.rows[fi])]}

        res = evaluate(setup, entries, self.draws(ctx), c.eval.seeds, c.eval.batch_size, ctx.device,
                       references={"full": setup.task.predict}, on_masks=on_masks, desc=f"{ctx.experiment} evaluate")
        # under torchrun each process saw its own slice of the images: combine what the figures show
        density = {p: all_reduce_sum(d, ctx.dist) for p, d in density.items()}
        flow_masks = all_reduce_sum(flow_masks.float(), ctx.dist) > 0
        fig = merge_dicts(fig, ctx.dist)
        payload = self._payload(ctx, setup, res, split, flow_masks & ~geometry.lf)
        if ctx.dist.is_main:
            write_results(ctx.results_dir, "metrics", payload,
                          ctx.metadata(data_source=payload["data"], cpu_time_s=round(time.process_time(), 1)),
                          markdown=tables_markdown(payload))
            write_figures(ctx, geometry, payload, fig, density, flow_masks, setup.test.names, c.eval.seeds * n_img)
        return payload

    def _payload(self, ctx: RunContext, setup: Setup, res, split: str, flow_new: torch.Tensor) -> dict:
        c, geometry = ctx.cfg, setup.extras["geometry"]
        k = setup.budgets[0]
        names = list(POLICY_ORDER)
        per_image = {p: {key: res.per_image(key, p, k) for key in res.metrics} for p in names}
        vols = setup.test.volumes
        n_img = len(setup.test)
        vol_names = sorted(set(vols), key=vols.index)

        def per_volume(values: torch.Tensor) -> torch.Tensor:
            return torch.stack([values[[i for i in range(n_img) if vols[i] == v]].mean() for v in vol_names])

        policies_rows = {p: image_row(per_image[p]["ssim"]) for p in names}
        extra = {m: {p: image_row(per_image[p][m]) for p in names} for m in ("psnr", "nmse")}
        vol_rows = {m: {p: image_row(per_volume(per_image[p][m + "_vol" if m != "nmse" else m])) for p in names}
                    for m in ("ssim", "psnr", "nmse")}
        m = c.mri
        t = res.timing["flow"]
        data_note = {"source": c.data.source, **ctx.recorded_data_sources()}
        return metrics_payload(
            ctx.experiment, "ssim", True, "acceleration", [m.acceleration], policies_rows,
            extra_metrics=extra,
            per_volume={"n_volumes": len(vol_names), "volumes": vol_names, **vol_rows},
            lines={"columns": geometry.size, "total": geometry.total, "low_frequency": geometry.n_lf,
                   "policy": geometry.k, "lf_fraction": m.lf_fraction, "lf_counts_inside_budget": True},
            image_size=[m.size, m.size], noise_pct=m.noise_pct, seeds=c.eval.seeds, split=split, selected_on="val",
            data=data_note, flow_policy_ms_per_slice=round(1000 * t.seconds / max(t.images, 1), 2),
            adaptivity={"flow_mean_pairwise_iou": [round(mean_pairwise_iou(flow_new), 4)] if n_img > 1 else [None],
                        "images": n_img,
                        "note": "mean IoU of the policy lines chosen for different images (first evaluation seed): "
                                "1 = a fixed mask, like the low-frequency block"},
            per_image={"names": setup.test.names, "volumes": vols,
                       **{p: {key: [round(float(v), 5) for v in per_image[p][key]] for key in ("ssim", "psnr", "nmse")}
                          for p in names}},
            notes=("Per-slice rows: SSIM/PSNR of magnitudes with the slice's own max as data range (fastMRI "
                   "convention), mean ± std over images; each image's value is averaged over `seeds` draws of the "
                   "k-space noise, random/equispaced/variable-density masks and flow samples. per_volume: data "
                   "range = volume max, averaged per volume. Every policy's measurement is reconstructed by the "
                   "same frozen MoDL; zero-filled = the random (LF + uniform) mask without MoDL; low-frequency = "
                   "the lines nearest the k-space centre (a wider LF band; a reference, not a fastMRI mask); full = "
                   "all lines through MoDL. The LF band is acquired first and counts inside the budget."),
        )


MRI_4X = MRIExperiment("mri-4x", Config)
MRI_8X = MRIExperiment("mri-8x", Config8x)
