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

from ...acquisition import Acquisition, BandFirst
from ...data.mri_files import ImageSet
from ...flow.model import FlowModel, FrozenEncoder
from ...flow.nets.mlp import MRIVelocityMLP
from ...flow.objective import FlowTaskObjective, objective_signature
from ...flow.policy import FlowPolicy
from ...flow.targets import TargetEstimator
from ...io import torch_load_safe, torch_save
from ...masks import random_mask, select_topk
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


def build_flow_model(cfg: Config, encoder: ReconUNet, flow_cfg=None) -> FlowModel:
    f, n = flow_cfg or cfg.flow, cfg.mri.size
    features = sum(encoder.feature_channels) + (n if f.acquired_input else 0)
    velocity = MRIVelocityMLP(n, features, f.hidden, f.layers, f.time_dim)
    return FlowModel(FrozenEncoder(encoder, "encode"), velocity, acquired_input=f.acquired_input)


def signature(ctx: RunContext, stage: str, flow_cfg=None) -> dict:
    c = ctx.cfg
    f = flow_cfg or c.flow
    base = {"experiment": ctx.experiment, "size": c.mri.size}
    pool = {"encoder_pool": c.encoder.pool} if c.encoder.pool != 1 else {}  # left out at 1: older runs still load
    if stage == "encoder":
        return {**base, "widths": list(c.encoder.widths), "bottleneck": c.encoder.bottleneck, **pool}
    if stage in ("modl-pretrain", "modl"):
        unrolls = c.modl.pretrain_unrolls if stage == "modl-pretrain" else c.modl.unrolls
        return {**base, "channels": c.modl.channels, "blocks": c.modl.blocks, "unrolls": unrolls,
                "acceleration": c.mri.acceleration, "lf_fraction": c.mri.lf_fraction}
    return {**base, "acceleration": c.mri.acceleration, "lf_fraction": c.mri.lf_fraction, "hidden": f.hidden,
            "layers": f.layers, "time_dim": f.time_dim, "encoder_widths": list(c.encoder.widths),
            "encoder_bottleneck": c.encoder.bottleneck, **pool, **objective_signature(f),
            **({"acquired_input": True} if f.acquired_input else {})}


def _load(ctx: RunContext, stage: str, module: nn.Module, prefix: str = "model.") -> nn.Module:
    return load_stage(ctx, stage, module, signature(ctx, stage), prefix)


def trained_encoder(ctx: RunContext) -> ReconUNet:
    return _load(ctx, "encoder", make_encoder_net(ctx.cfg))


def trained_modl(ctx: RunContext) -> MRIReconstructionTask:
    net = _load(ctx, "modl", make_modl(ctx.cfg, ctx.cfg.modl.unrolls))
    return MRIReconstructionTask(net, ctx.cfg.modl.ssim_weight).freeze()


def trained_flow(ctx: RunContext, flow_cfg=None, stage: str = "flow", geometry: Geometry | None = None) -> FlowPolicy:
    """The trained flow policy; ``geometry`` (default: the run's) sets the budget its centre prior covers."""
    f = flow_cfg or ctx.cfg.flow
    model = build_flow_model(ctx.cfg, trained_encoder(ctx), f)
    load_stage(ctx, stage, model, signature(ctx, stage, f))
    geometry = geometry or Geometry.from_cfg(ctx.cfg)
    return FlowPolicy(model, ctx.cfg.mri.size, steps=f.steps, samples=f.samples, rounds=f.rounds,
                      condition_fn=geometry.condition_fn(), operator=geometry.operator,
                      prior=center_prior(geometry, f))


class EncoderObjective(nn.Module):
    """Condition encoder pretraining: noisy LF-band magnitude → full magnitude (L1)."""

    def __init__(self, net: ReconUNet, geometry: Geometry):
        super().__init__()
        self.model, self.geometry = net, geometry

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        s = self.geometry
        cond = lf_condition(s.operator, x, s.acquired(x.shape[0], x.device), True, generator, s.pool)
        target = s.condition_fn()(s.operator, x, None)  # the full image's (pooled) magnitude
        loss = (self.model(cond) - target).abs().mean()
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


#: targets that depend only on the image (the MoDL is frozen): computed once per pool item; the saliency and
#: greedy ones as a ranking of the lines, which gives the target of any round (see TargetEstimator.ranking)
POOLED_TARGETS = ("saliency", "greedy", "best-of-r")
RANKED_TARGETS = ("saliency", "greedy")


class PooledTarget(TargetEstimator):
    """Targets precomputed once for the fixed flow-training pool: with the MoDL frozen, an example's saliency /
    greedy ranking of the lines (on top of the LF band) and its best-of-R mask never change. A ranking serves
    every round of a sequential policy: the round's target is the best-ranked lines not acquired yet. The batch
    function hands the rows of the current batch over with :meth:`select`. ``self`` and ``none`` (and best-of-R
    for a partial budget) are estimated online."""

    def __init__(self, kind: str, task, operator, pooled: torch.Tensor | None, k: int, r: int = 16, chunks: int = 4):
        super().__init__(kind, task, operator, r, chunks)
        self.pooled, self.k = pooled, k
        self._current: torch.Tensor | None = None

    def select(self, idx: torch.Tensor) -> None:
        self._current = None if self.pooled is None else self.pooled[idx]

    def __call__(self, x, y, k, acquired, generator, proposals=None):
        ranked = self.kind in RANKED_TARGETS
        if not (ranked or (self.kind in POOLED_TARGETS and k == self.k)):
            return super().__call__(x, y, k, acquired, generator, proposals)
        if self._current is None or self._current.shape[0] != x.shape[0]:
            raise RuntimeError("PooledTarget.select() was not called for this batch")
        current = self._current.to(x.device)
        if ranked:
            return acquired | select_topk(-current, k, acquired)
        return acquired | current


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


def flow_pool(ctx: RunContext, geometry: Geometry, images: ImageSet, task: MRIReconstructionTask,
              flow_cfg=None) -> dict:
    """The fixed flow-training pool: augmented views, their noisy LF conditions and target masks (cached per
    target estimator in ``<run>/flow-pool-<target>.pt``)."""
    f = flow_cfg or ctx.cfg.flow
    n = len(images) * f.pool_augment
    sig = {"experiment": ctx.experiment, "size": geometry.size, "k": geometry.k, "n_lf": geometry.n_lf, "items": n,
           "target": f.target, "best_of_r": f.best_of_r, "seed": ctx.seed, "modl": _fingerprint(task.model),
           "augment": dict(vars(ctx.cfg.augment)), "noise_pct": ctx.cfg.mri.noise_pct, "format": 2}
    if f.target == "greedy":
        sig["greedy_chunks"] = f.greedy_chunks
    path = ctx.run_dir / f"flow-pool-{f.target}.pt"
    if path.is_file():
        cached = torch_load_safe(path)
        if cached.get("signature") == sig:
            return cached
    op, gen = geometry.operator, torch.Generator().manual_seed(ctx.seed * 7_919 + 17)
    xs = torch.cat([prepare(images, range(len(images)), ctx.cfg, gen) for _ in range(f.pool_augment)])
    conds, masks = [], []
    pooled = f.target in POOLED_TARGETS
    estimator = TargetEstimator(f.target, task, op, f.best_of_r, f.greedy_chunks)
    chunk = max(1, f.loop.batch_size)
    for start in tqdm(range(0, n, chunk), desc=f"{ctx.experiment} flow targets", leave=False):
        x = xs[start:start + chunk].to(ctx.device)
        acq = geometry.acquired(x.shape[0], x.device)
        conds.append(lf_condition(op, x, acq, True, gen, geometry.pool).cpu())
        if f.target in RANKED_TARGETS:
            chunks = 1 if f.target == "saliency" else f.greedy_chunks
            masks.append(estimator.ranking(x, x, geometry.k, acq, chunks).float().cpu())
        elif pooled:
            masks.append((estimator(x, x, geometry.k, acq, gen) & ~acq).cpu())
    pool = {"signature": sig, "x": xs, "condition": torch.cat(conds),
            "targets": torch.cat(masks) if pooled else None}
    if ctx.dist.is_main:
        torch_save(path, pool)
    return pool


def center_prior(geometry: Geometry, f) -> torch.Tensor | None:
    """``f.center_prior`` on the policy budget's k most central free lines (the low-frequency block), else 0."""
    if not f.center_prior:
        return None
    acq = geometry.acquired(1)
    block = select_topk(-(torch.arange(geometry.size) - geometry.size // 2).abs().double()[None], geometry.k, acq)[0]
    return f.center_prior * block.float()


def train_flow(ctx: RunContext, geometry: Geometry, images: ImageSet, flow_cfg=None, stage: str = "flow") -> None:
    f = flow_cfg or ctx.cfg.flow
    task = trained_modl(ctx)
    pool = flow_pool(ctx, geometry, images, task, f)
    model = build_flow_model(ctx.cfg, trained_encoder(ctx), f)
    op = geometry.operator
    target = PooledTarget(f.target, task, op, pool["targets"], geometry.k, f.best_of_r, f.greedy_chunks)
    obj = FlowTaskObjective.from_config(model, task, op, target, f, center_prior(geometry, f)).to(ctx.device)
    first = BandFirst(geometry.lf)

    def batch_fn(idx, gen):
        target.select(idx)
        x = pool["x"][idx].to(ctx.device)
        batch = {"x": x, "y": x, "condition": pool["condition"][idx].to(ctx.device),
                 "acquired": geometry.acquired(len(idx), ctx.device), "k": geometry.k}
        if f.rounds > 1:  # later rounds measure again: the batch's full k-space, its noise drawn once
            acq = Acquisition.start(op, x, first, geometry.condition_fn(), None, True, gen)
            batch.update(condition=acq.condition(), acquisition=acq)
        return batch

    fit_stage(ctx, stage, obj, f.loop, batch_fn, pool["x"].shape[0], signature(ctx, stage, f),
              desc=f"{ctx.experiment} {stage}")
