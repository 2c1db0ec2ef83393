"""``flowcs export --run-dir runs/mri-8x --out policy.pt``: a self-contained, fast MRI mask generator.

The exported file is a **TorchScript archive** holding the whole mask-generation pipeline of a trained MRI flow
policy, from the low-frequency (LF) k-space to the hard mask:

    LF k-space (B, 2, H, W) ──× LF band──▶ centred inverse FFT ──▶ |·| (the zero-filled LF magnitude, the
    condition) ──▶ frozen CNN encoder (BatchNorm folded into the convolutions) ──▶ global average pools
    ──▶ ``steps`` Euler steps of the velocity MLP from the noise x0 ──▶ mean over the ``samples`` draws
    ──▶ hard top-k of the non-LF columns (stable, ties to the lower index) ∪ LF band.

It needs only ``torch`` to run (:func:`load_exported` does not import the training code), and loading it
unpickles no arbitrary Python objects: ``torch.jit.load`` reads code + tensors only. A JSON sidecar
(``<out>.json``; the same JSON is also stored inside the archive as ``extra/config.json``) records the
configuration: image size, N, the LF band, the number of policy lines k, Euler steps, samples, and the
run it came from.

Speed-ups against the training-code path (:class:`flowcs.flow.policy.FlowPolicy`), all numerically
equivalent up to float32 rounding (the masks are the same; see ``docs/performance.md`` for the measured
tolerance):

* inference mode, no autograd bookkeeping, no per-call shape/budget validation;
* BatchNorm folded into the preceding convolution (eval statistics), the decoder half of the U-Net dropped
  (the flow only uses the encoder's pooled features);
* the velocity MLP's first layer split: the pooled-feature part ``W_c·c + b`` is computed once per call
  (it does not change over the Euler steps) and the time-embedding part ``W_t·emb(t_i)`` once at export
  time for every step; each step then multiplies only the N scores (``fold_first_layer``; off: the exact
  concatenation of the original network);
* TorchScript ``freeze`` (constants inlined) and a fixed-length Euler loop.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "flowcs-exported-mri-policy/1"

__all__ = ["FORMAT", "MaskGenerator", "ExportedPolicy", "build_generator", "export_policy", "export_run",
           "load_exported", "noise_for", "add_parser", "run"]


# ----------------------------------------------------------------------------- the scripted pipeline


@contextmanager
def _quiet_jit():
    """torch >= 2.9 marks TorchScript deprecated (in favour of torch.export); it still works and is what we ship."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*")
        yield


def _fuse(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    return fuse_conv_bn_eval(conv.eval(), bn.eval())


class MaskGenerator(nn.Module):
    """LF k-space → (mask, scores) of a trained MRI flow policy; TorchScript-compatible.

    ``forward(kspace, noise)``: ``kspace`` (B, 2, H, W) real/imaginary pairs of the centred k-space (only the LF
    columns are used; the others are zeroed as in the measurement), ``noise`` (B, samples, N) the standard-normal
    start x0 of the flow (draw it with :func:`noise_for` to reproduce ``FlowPolicy`` with a seeded generator).
    Returns the bool (B, N) mask: the LF band plus the ``k`` chosen columns.
    """

    def __init__(self, encoder_convs: list[nn.Conv2d], n_levels: int, pads: list[int], lf: torch.Tensor, k: int,
                 steps: int, samples: int, first: nn.Linear, time_table: torch.Tensor, hidden: list[nn.Linear],
                 norms: list[nn.LayerNorm], out: nn.Linear, n_locations: int, feature_dim: int,
                 fold_first_layer: bool = True, channels_last: bool = True, encoder_bf16: bool = False):
        super().__init__()
        self.channels_last = bool(channels_last)
        self.encoder_bf16 = bool(encoder_bf16)
        for conv in encoder_convs:
            if self.encoder_bf16:
                conv.to(torch.bfloat16)
            if self.channels_last:
                conv.to(memory_format=torch.channels_last)
        self.convs = nn.ModuleList(encoder_convs)
        self.n_levels = int(n_levels)
        self.pads = [int(p) for p in pads]
        self.pad_needed = any(p != 0 for p in self.pads)
        self.register_buffer("lf", lf.bool().reshape(1, -1).clone())
        self.register_buffer("lf_image", lf.float().reshape(1, 1, 1, -1).clone())
        self.k = int(k)
        self.steps = int(steps)
        self.samples = int(samples)
        self.dt = 1.0 / self.steps
        self.n = int(n_locations)
        self.fold = bool(fold_first_layer)
        w = first.weight.detach()
        n, d = self.n, int(feature_dim)
        self.register_buffer("w_x", w[:, :n].clone())
        self.register_buffer("w_c", w[:, n:n + d].clone())
        self.register_buffer("w_full", w.clone())
        self.register_buffer("b_first", first.bias.detach().clone())
        # time_table: (steps, time_dim) embeddings; folded: their product with the time block of W
        self.register_buffer("emb", time_table.clone())
        self.register_buffer("t_proj", F.linear(time_table, w[:, n + d:]).clone())
        self.first_norm = norms[0]
        self.layers = nn.ModuleList(_Layer(lin, norm) for lin, norm in zip(hidden, norms[1:]))
        self.out = out

    def condition(self, kspace: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) magnitude of the zero-filled reconstruction of the LF band (the flow's condition)."""
        y = kspace * self.lf_image
        z = torch.complex(y[:, 0].contiguous(), y[:, 1].contiguous())
        z = torch.fft.ifftshift(z, dim=(-2, -1))
        z = torch.fft.fftshift(torch.fft.ifft2(z, norm="ortho"), dim=(-2, -1))
        return torch.stack([z.real, z.imag], dim=1).pow(2).sum(dim=1, keepdim=True).sqrt()

    def features(self, cond: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features (B, Σ C_i): two fused conv + LeakyReLU per level, max-pool between levels."""
        h = cond
        if self.pad_needed:
            h = F.pad(h, self.pads)
        if self.encoder_bf16:
            h = h.to(torch.bfloat16)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        pooled: list[torch.Tensor] = []
        for i, conv in enumerate(self.convs):
            level = i // 2
            if i % 2 == 0 and level > 0:
                h = F.max_pool2d(h, 2)
            h = F.leaky_relu_(conv(h), 0.2)
            if i % 2 == 1:
                pooled.append(h.mean(dim=(-2, -1)))
        return torch.cat(pooled, dim=1).to(torch.float32)

    def integrate(self, c: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Euler integration of the velocity MLP from ``noise`` (B, samples, N); returns mean scores (B, N)."""
        b = noise.shape[0]
        x = noise.reshape(b * self.samples, self.n)
        c = c.repeat_interleave(self.samples, dim=0)
        base = F.linear(c, self.w_c, self.b_first)
        for i in range(self.steps):
            if self.fold:
                h = F.linear(x, self.w_x) + base + self.t_proj[i]
            else:
                emb = self.emb[i].unsqueeze(0).expand(x.shape[0], -1)
                h = F.linear(torch.cat([x, c, emb], dim=1), self.w_full, self.b_first)
            h = F.silu(self.first_norm(h))
            for layer in self.layers:
                h = layer(h)
            x = x + self.dt * self.out(h)
        return x.reshape(b, self.samples, self.n).mean(dim=1)

    def topk(self, scores: torch.Tensor) -> torch.Tensor:
        """LF band ∪ the k best non-LF columns (exactly :func:`flowcs.masks.select_topk`)."""
        acq = self.lf.expand(scores.shape[0], -1)
        masked = scores.to(torch.float64).masked_fill(acq, -math.inf)
        order = torch.sort(masked, dim=1, descending=True, stable=True).indices
        order = order.gather(1, acq.gather(1, order).to(torch.uint8).argsort(dim=1, stable=True))[:, :self.k]
        chosen = torch.zeros_like(acq).scatter(1, order, True)
        return acq | chosen

    @torch.jit.export
    def scores(self, kspace: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.integrate(self.features(self.condition(kspace)), noise)

    def forward(self, kspace: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.topk(self.scores(kspace, noise))


class _Layer(nn.Module):
    """Linear → LayerNorm → SiLU (one hidden layer of the velocity MLP)."""

    def __init__(self, linear: nn.Linear, norm: nn.LayerNorm):
        super().__init__()
        self.linear, self.norm = linear, norm

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.linear(h)))


def build_generator(policy, lf: torch.Tensor, k: int, steps: int | None = None, samples: int | None = None,
                    image_size: int | None = None, fold_first_layer: bool = True, channels_last: bool = True,
                    encoder_bf16: bool = False) -> MaskGenerator:
    """A :class:`MaskGenerator` (eager, scriptable) from a trained MRI :class:`~flowcs.flow.policy.FlowPolicy`."""
    from .flow.nets.mlp import MRIVelocityMLP
    from .layers import pad_to_multiple
    from .tasks.unet import ReconUNet

    model = policy.model
    unet, vel = model.encoder.net, model.velocity
    if not isinstance(unet, ReconUNet) or getattr(model.encoder, "method", None) != "encode":
        raise TypeError("export needs an MRI flow policy whose encoder is a ReconUNet (method 'encode')")
    if not isinstance(vel, MRIVelocityMLP):
        raise TypeError("export needs an MRI flow policy with an MRIVelocityMLP velocity network")
    steps = int(policy.steps if steps is None else steps)
    samples = int(policy.samples if samples is None else samples)
    n = vel.n_locations
    size = int(image_size or n)
    convs = []
    for block in [*unet.enc, unet.mid]:
        convs += [_fuse(block[0], block[1]), _fuse(block[3], block[4])]
    _, pads = pad_to_multiple(torch.zeros(1, 1, size, n), 2 ** len(unet.widths))
    dt = 1.0 / steps
    with torch.no_grad():
        table = torch.cat([vel.time(torch.full((1,), i * dt, dtype=torch.float32)) for i in range(steps)])
    linears = [m for m in vel.body if isinstance(m, nn.Linear)]
    norms = [m for m in vel.body if isinstance(m, nn.LayerNorm)]
    gen = MaskGenerator(convs, len(unet.enc) + 1, list(pads), lf, k, steps, samples, linears[0], table,
                        [_copy_linear(m) for m in linears[1:]], [_copy_norm(m) for m in norms],
                        _copy_linear(vel.out), n, vel.feature_dim, fold_first_layer, channels_last, encoder_bf16)
    return gen.eval().requires_grad_(False)


def _copy_linear(m: nn.Linear) -> nn.Linear:
    new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    new.load_state_dict(m.state_dict())
    return new


def _copy_norm(m: nn.LayerNorm) -> nn.LayerNorm:
    new = nn.LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine)
    new.load_state_dict(m.state_dict())
    return new


def script(gen: MaskGenerator, freeze: bool = True) -> torch.jit.ScriptModule:
    """TorchScript of a generator; ``freeze`` inlines the weights and attributes as constants."""
    with _quiet_jit():
        sm = torch.jit.script(gen.eval())
        if freeze:
            sm = torch.jit.freeze(sm, preserved_attrs=["scores", "condition", "features", "topk"])
    return sm


def noise_for(batch: int, samples: int, n_locations: int, seed: int | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The flow's start noise x0 (B, samples, N), drawn exactly as ``FlowPolicy`` draws it from a generator."""
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed if seed is not None else 0))
    return torch.randn((batch, samples, n_locations), generator=generator)


# ----------------------------------------------------------------------------- export / load


def export_policy(policy, lf: torch.Tensor, k: int, out: str | Path, config: dict, steps: int | None = None,
                  samples: int | None = None, freeze: bool = True, **options) -> dict:
    """Write ``out`` (TorchScript) + ``out.json`` (config sidecar); returns the config written.

    ``options``: ``fold_first_layer`` (default True), ``channels_last`` (True), ``encoder_bf16`` (False) of
    :func:`build_generator`.
    """
    from .io import save_with, write_json

    gen = build_generator(policy, lf, k, steps, samples, config.get("image_size", [None])[0], **options)
    sm = script(gen, freeze)
    cfg = {"format": FORMAT, **config, "columns": gen.n, "k": gen.k, "steps": gen.steps, "samples": gen.samples,
           "low_frequency_lines": lf.nonzero().flatten().tolist(), "fold_first_layer": gen.fold, "frozen": freeze,
           "channels_last": gen.channels_last, "encoder_bf16": gen.encoder_bf16,
           "torch_version": torch.__version__,
           "inputs": {"kspace": "float32 (B, 2, H, W): real/imaginary parts of the centred k-space (fastMRI "
                                "convention, orthonormal FFT of the normalised image); only the LF columns are read",
                      "noise": "float32 (B, samples, N): x0 ~ N(0, I); torch.randn((B, samples, N), "
                               "generator=torch.Generator().manual_seed(seed)) reproduces the training code"},
           "output": "bool (B, N) mask: LF band + k columns chosen by the flow policy"}
    out = Path(out)
    extra = {"config.json": json.dumps(cfg, sort_keys=True)}
    with _quiet_jit():
        save_with(out, lambda fh: torch.jit.save(sm, fh, _extra_files=extra))
    write_json(sidecar(out), cfg)
    return cfg


def sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def _load_mri_run(run_dir):
    """(context, experiment) of a trained mri-4x / mri-8x run directory."""
    from .experiments import get_experiment
    from .experiments.context import load_run

    ctx = load_run(run_dir, "cpu", experiments=("mri-4x", "mri-8x"))
    return ctx, get_experiment(ctx.experiment)


def export_run(run_dir: str | Path, out: str | Path, steps: int | None = None, samples: int | None = None,
               freeze: bool = True, **options) -> dict:
    """Load a trained mri-4x / mri-8x run directory and export its flow policy."""
    ctx, exp = _load_mri_run(run_dir)
    setup = exp.geometry(ctx.cfg)
    policy = exp.flow_policy(ctx)
    m = ctx.cfg.mri
    config = {"experiment": ctx.experiment, "run_dir": str(run_dir), "image_size": [m.size, m.size],
              "acceleration": m.acceleration, "lf_fraction": m.lf_fraction, "total_lines": setup.total,
              "normalisation": "complex image divided by its LF-band scale (flowcs.data.mri_files.lf_scale)"}
    return export_policy(policy, setup.lf, setup.k, out, config, steps, samples, freeze, **options)


class ExportedPolicy:
    """A loaded exported policy: ``masks(kspace, seed=…)`` or ``masks(kspace, noise=…)``; ``config`` = the sidecar."""

    def __init__(self, module: torch.jit.ScriptModule, config: dict, device: torch.device):
        self.module, self.config, self.device = module, config, device
        self.samples, self.n = int(config["samples"]), int(config["columns"])

    def noise(self, batch: int, seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        return noise_for(batch, self.samples, self.n, seed, generator).to(self.device)

    def masks(self, kspace: torch.Tensor, seed: int | None = None, noise: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
        if noise is None:
            noise = self.noise(kspace.shape[0], seed, generator)
        with torch.inference_mode():
            return self.module(kspace.to(self.device), noise.to(self.device))

    def scores(self, kspace: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module.scores(kspace.to(self.device), noise.to(self.device))

    __call__ = masks


def load_exported(path: str | Path, device: str | torch.device = "cpu", threads: int | None = None
                  ) -> ExportedPolicy:
    """Load an exported policy (``torch.jit.load``: code and tensors only, no arbitrary unpickling).

    The config comes from the archive itself (``extra/config.json``); the sidecar is for people and tools.
    """
    from .errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no exported policy here (flowcs export --run-dir RUN --out {path})")
    if threads:
        torch.set_num_threads(int(threads))
    extra = {"config.json": ""}
    try:
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location=torch.device(device), _extra_files=extra)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: not a TorchScript policy archive ({str(exc).splitlines()[0]})") from None
    try:
        config = json.loads(extra["config.json"])
    except json.JSONDecodeError:
        config = {}
    if config.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a flowcs exported policy (format {config.get('format')!r}, want {FORMAT!r})")
    module.eval()
    return ExportedPolicy(module, config, torch.device(device))


# ----------------------------------------------------------------------------- CLI


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="write a self-contained TorchScript mask generator of a trained MRI run")
    p.add_argument("--run-dir", required=True, metavar="DIR", help="a trained mri-4x / mri-8x run directory")
    p.add_argument("--out", required=True, metavar="FILE", help="output TorchScript archive (e.g. policy.pt); "
                                                                 "the config goes to FILE.json")
    p.add_argument("--steps", type=int, default=None, help="Euler steps (default: the run's flow.steps)")
    p.add_argument("--samples", type=int, default=None, help="flow samples averaged per mask (default: the run's)")
    p.add_argument("--exact-first-layer", action="store_true",
                   help="keep the velocity MLP's first layer as one matmul over [x, c, emb(t)] (no folding)")
    p.add_argument("--no-freeze", action="store_true", help="do not torch.jit.freeze the scripted module")
    p.add_argument("--bf16-encoder", action="store_true",
                   help="run the CNN encoder in bfloat16 (faster on AVX512-BF16 CPUs; scores change by ~1e-2, masks "
                        "may differ: check the printed agreement)")
    p.add_argument("--check", type=int, default=4, metavar="SEEDS",
                   help="compare the exported masks with the training code's on SEEDS random k-spaces (default 4; 0: "
                        "skip)")
    return p


def run(args: argparse.Namespace) -> int:
    from .errors import ConfigError

    for name in ("steps", "samples"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ConfigError(f"--{name} must be >= 1, got {v}")
    cfg = export_run(args.run_dir, args.out, args.steps, args.samples, not args.no_freeze,
                     fold_first_layer=not args.exact_first_layer, encoder_bf16=args.bf16_encoder)
    msg = (f"exported {cfg['experiment']} flow policy ({cfg['steps']} Euler steps, {cfg['samples']} samples, "
           f"{len(cfg['low_frequency_lines'])} LF + {cfg['k']} chosen of {cfg['columns']} lines) → {args.out} "
           f"(+ {sidecar(args.out).name})")
    if args.check:
        diff = check_against_run(args.out, args.run_dir, args.check)
        msg += f"; masks equal to the training code's on {diff['equal']}/{diff['total']} checks " \
               f"(max |Δscore| {diff['max_abs_score_diff']:.2e})"
        if diff["equal"] != diff["total"]:
            print(msg)
            return 1
    print(msg)
    return 0


def check_against_run(path: str | Path, run_dir: str | Path, seeds: int = 4) -> dict:
    """Exported masks vs ``FlowPolicy.propose`` on random normalised images of the run's size (same noise)."""
    from .acquisition import Magnitude

    exported = load_exported(path)
    ctx, experiment = _load_mri_run(run_dir)
    setup = experiment.geometry(ctx.cfg)
    policy = experiment.flow_policy(ctx)
    policy.steps, policy.samples = exported.config["steps"], exported.config["samples"]
    equal, total, worst = 0, 0, 0.0
    for s in range(seeds):
        g = torch.Generator().manual_seed(1000 + s)
        x = torch.randn(2, 2, setup.size, setup.size, generator=g)
        acq = setup.acquired(2)
        y = setup.operator.measure(x, acq)
        cond = Magnitude()(setup.operator, setup.operator.zero_filled(y, acq), acq)
        ref = policy.propose(cond, setup.k, acq, torch.Generator().manual_seed(s))
        ref_scores = policy.scores(cond, acq, torch.Generator().manual_seed(s))
        noise = exported.noise(2, seed=s)
        got = exported.masks(y, noise=noise)
        worst = max(worst, float((exported.scores(y, noise) - ref_scores).abs().max()))
        equal += int((got == ref).all(dim=1).sum())
        total += 2
    return {"equal": equal, "total": total, "max_abs_score_diff": worst}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowcs")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
