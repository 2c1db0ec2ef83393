"""The stages of the MRI experiments: condition encoder, MoDL (pretrain + fine-tune) and the flow policy.

encoder        small U-Net (LF magnitude → full magnitude, L1); its encoder is the flow's frozen condition encoder
modl-pretrain  MoDL with 1 unroll on random LF + uniform / variable-density masks with k-space noise
modl           the same MoDL fine-tuned with ``modl.unrolls`` unrolls (the frozen task model afterwards)
flow           the MLP flow policy trained with the frozen MoDL (FM + task loss, Kendall weighting, gate) on a
               fixed pool of augmented views whose conditions and targets are computed once
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from ...data.mri_files import ImageSet
from ...flow.model import FlowModel, FrozenEncoder
from ...flow.nets.mlp import MRIVelocityMLP
from ...flow.objective import FlowTaskObjective, objective_signature
from ...flow.policy import FlowPolicy
from ...flow.targets import TargetEstimator
from ...io import torch_load_safe, torch_save
from ...masks import random_mask
from ...operators.fft import complex_abs
from ...policies.cartesian import VariableDensityPolicy
from ...rng import rand_rows
from ...tasks.modl import MoDL, MRIReconstructionTask
from ...tasks.unet import ReconUNet
from ...training.loop import LoopConfig
from ...training.stages import fit_stage, load_stage
from ..context import RunContext
from .config import Config
from .data import Geometry, lf_condition, prepare

__all__ = ["make_encoder_net", "make_modl", "build_flow_model", "signature", "trained_encoder", "trained_modl",
           "trained_flow", "EncoderObjective", "MoDLObjective", "PooledTarget", "fit_images", "flow_pool",
           "train_flow"]


def make_encoder_net(cfg: Config) -> ReconUNet:
    return ReconUNet(1, 1, cfg.encoder.widths, cfg.encoder.bottleneck)


def make_modl(cfg: Config, unrolls: int) -> MoDL:
    m = cfg.modl
    return MoDL(unrolls, m.cg_iters, m.channels, m.blocks, m.lam_init)


def build_flow_model(cfg: Config, encoder: ReconUNet) -> FlowModel:
    f = cfg.flow
    velocity = MRIVelocityMLP(cfg.mri.size, sum(encoder.feature_channels), f.hidden, f.layers, f.time_dim)
    return FlowModel(FrozenEncoder(encoder, "encode"), velocity)


def signature(ctx: RunContext, stage: str) -> dict:
    c = ctx.cfg
    base = {"experiment": ctx.experiment, "size": c.mri.size}
    if stage == "encoder":
        return {**base, "widths": list(c.encoder.widths), "bottleneck": c.encoder.bottleneck}
    if stage in ("modl-pretrain", "modl"):
        unrolls = c.modl.pretrain_unrolls if stage == "modl-pretrain" else c.modl.unrolls
        return {**base, "channels": c.modl.channels, "blocks": c.modl.blocks, "unrolls": unrolls,
                "acceleration": c.mri.acceleration, "lf_fraction": c.mri.lf_fraction}
    return {**base, "acceleration": c.mri.acceleration, "lf_fraction": c.mri.lf_fraction, "hidden": c.flow.hidden,
            "layers": c.flow.layers, "time_dim": c.flow.time_dim, "encoder_widths": list(c.encoder.widths),
            "encoder_bottleneck": c.encoder.bottleneck, **objective_signature(c.flow)}


def _load(ctx: RunContext, stage: str, module: nn.Module, prefix: str = "model.") -> nn.Module:
    return load_stage(ctx, stage, module, signature(ctx, stage), prefix)


def trained_encoder(ctx: RunContext) -> ReconUNet:
    return _load(ctx, "encoder", make_encoder_net(ctx.cfg))


def trained_modl(ctx: RunContext) -> MRIReconstructionTask:
    net = _load(ctx, "modl", make_modl(ctx.cfg, ctx.cfg.modl.unrolls))
    return MRIReconstructionTask(net, ctx.cfg.modl.ssim_weight).freeze()


def trained_flow(ctx: RunContext) -> FlowPolicy:
    model = build_flow_model(ctx.cfg, trained_encoder(ctx))
    _load(ctx, "flow", model)
    return FlowPolicy(model, ctx.cfg.mri.size, steps=ctx.cfg.flow.steps, samples=ctx.cfg.flow.samples)


class EncoderObjective(nn.Module):
    """Condition encoder pretraining: noisy LF-band magnitude → full magnitude (L1)."""

    def __init__(self, net: ReconUNet, geometry: Geometry):
        super().__init__()
        self.model, self.geometry = net, geometry

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        s = self.geometry
        cond = lf_condition(s.operator, x, s.acquired(x.shape[0], x.device), True, generator)
        loss = (self.model(cond) - complex_abs(x)).abs().mean()
        return {"loss": loss}


class MoDLObjective(nn.Module):
    """MoDL on random masks at the experiment's budget: LF band + k lines, uniform or variable-density."""

    def __init__(self, task: MRIReconstructionTask, geometry: Geometry, vd_fraction: float, vd_power: float):
        super().__init__()
        self.model, self.task, self.geometry = task.model, task, geometry
        self.vd_fraction = vd_fraction
        self.vd = VariableDensityPolicy(geometry.size, vd_power)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        s, b = self.geometry, x.shape[0]
        acq = s.acquired(b, x.device)
        uni = random_mask(b, s.size, s.k, acq, generator, x.device)
        vd = self.vd.propose(x, s.k, acq, generator)
        use_vd = (rand_rows(b, generator=generator) < self.vd_fraction).to(x.device)[:, None]
        mask = acq | torch.where(use_vd, vd, uni)
        op = s.operator
        y = op.measure(x, mask, noisy=True, generator=generator)
        pred = self.task.predict(op.zero_filled(y, mask), op.mask_to_image(mask))
        loss = self.task.loss(pred, x)
        with torch.no_grad():
            score = self.task.score(pred.detach(), x).mean()
        return {"loss": loss, "ssim": score, "lam": self.model.lam.detach()}


class PooledTarget(TargetEstimator):
    """Target masks precomputed once for the fixed flow-training pool (the MoDL is frozen and the MRI budget
    fixed, so an example's saliency / best-of-R target never changes). The batch function hands the rows of the
    current batch over with :meth:`select`; ``none`` still draws fresh random masks."""

    def __init__(self, kind: str, task, operator, masks: torch.Tensor, r: int = 16):
        super().__init__(kind, task, operator, r)
        self.masks = masks
        self._current: torch.Tensor | None = None

    def select(self, idx: torch.Tensor) -> None:
        self._current = self.masks[idx]

    def __call__(self, x, y, k, acquired, generator):
        if self.kind == "none":
            return super().__call__(x, y, k, acquired, generator)
        if self._current is None or self._current.shape[0] != x.shape[0]:
            raise RuntimeError("PooledTarget.select() was not called for this batch")
        return acquired | self._current.to(x.device)


def fit_images(ctx: RunContext, stage: str, obj: nn.Module, loop: LoopConfig, images: ImageSet,
               repeat: int) -> None:
    """Train ``obj(x=...)`` on ``repeat`` freshly augmented passes over ``images`` per epoch."""
    n = len(images)

    def batch_fn(idx, gen):
        return {"x": prepare(images, idx % n, ctx.cfg, gen).to(ctx.device)}

    fit_stage(ctx, stage, obj, loop, batch_fn, n * repeat, signature(ctx, stage), desc=f"{ctx.experiment} {stage}")


def _fingerprint(module: nn.Module) -> float:
    return round(float(sum(p.detach().double().sum() for p in module.state_dict().values()
                           if torch.is_tensor(p) and p.is_floating_point())), 6)


def flow_pool(ctx: RunContext, geometry: Geometry, images: ImageSet, task: MRIReconstructionTask) -> dict:
    """The fixed flow-training pool: augmented views, their noisy LF conditions and target masks (cached)."""
    f = ctx.cfg.flow
    n = len(images) * f.pool_augment
    sig = {"experiment": ctx.experiment, "size": geometry.size, "k": geometry.k, "n_lf": geometry.n_lf, "items": n,
           "target": f.target, "best_of_r": f.best_of_r, "seed": ctx.seed, "modl": _fingerprint(task.model),
           "augment": dict(vars(ctx.cfg.augment)), "noise_pct": ctx.cfg.mri.noise_pct}
    path = ctx.run_dir / "flow-pool.pt"
    if path.is_file():
        cached = torch_load_safe(path)
        if cached.get("signature") == sig:
            return cached
    op, gen = geometry.operator, torch.Generator().manual_seed(ctx.seed * 7_919 + 17)
    xs = torch.cat([prepare(images, range(len(images)), ctx.cfg, gen) for _ in range(f.pool_augment)])
    conds, masks = [], []
    estimator = TargetEstimator(f.target, task, op, f.best_of_r)
    chunk = max(1, ctx.cfg.flow.loop.batch_size)
    for start in tqdm(range(0, n, chunk), desc=f"{ctx.experiment} flow targets", leave=False):
        x = xs[start:start + chunk].to(ctx.device)
        acq = geometry.acquired(x.shape[0], x.device)
        conds.append(lf_condition(op, x, acq, True, gen).cpu())
        masks.append((estimator(x, x, geometry.k, acq, gen) & ~acq).cpu())
    pool = {"signature": sig, "x": xs, "condition": torch.cat(conds), "targets": torch.cat(masks)}
    if ctx.dist.is_main:
        torch_save(path, pool)
    return pool


def train_flow(ctx: RunContext, geometry: Geometry, images: ImageSet) -> None:
    f = ctx.cfg.flow
    task = trained_modl(ctx)
    pool = flow_pool(ctx, geometry, images, task)
    model = build_flow_model(ctx.cfg, trained_encoder(ctx))
    target = PooledTarget(f.target, task, geometry.operator, pool["targets"], f.best_of_r)
    obj = FlowTaskObjective(model, task, geometry.operator, target, f.loss, f.gate_a, f.gate_b).to(ctx.device)

    def batch_fn(idx, _gen):
        target.select(idx)
        x = pool["x"][idx].to(ctx.device)
        return {"x": x, "y": x, "condition": pool["condition"][idx].to(ctx.device),
                "acquired": geometry.acquired(len(idx), ctx.device), "k": geometry.k}

    fit_stage(ctx, "flow", obj, f.loop, batch_fn, pool["x"].shape[0], signature(ctx, "flow"),
              desc=f"{ctx.experiment} flow")
