"""Writing and loading the serving form of a policy: ``torch.export`` programs (``.pt2``) and ONNX (``.onnx``).

One loader, :func:`load_exported`, for both: it returns an :class:`ExportedPolicy` whose ``masks(kspace, seed=…)``
and ``scores(kspace, noise)`` behave the same whatever runs underneath (PyTorch for ``.pt2``, ONNX Runtime for
``.onnx``). The policy's configuration (image size, LF lines, k, steps, samples, the run it came from) travels
inside the file (``extra/config.json`` of the ``.pt2`` archive; the ONNX model's metadata) and in a JSON sidecar
for people and tools. Loading unpickles nothing: ``torch.export.load`` reads a serialized graph and tensors,
ONNX Runtime a protobuf.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch

from ..errors import ConfigError

__all__ = ["FORMAT", "FORMATS", "ExportedPolicy", "save_program", "load_exported", "noise_for", "sidecar"]

FORMAT = "flowcs-exported-mri-policy/2"
FORMATS = (".pt2", ".onnx")


def noise_for(batch: int, samples: int, n_locations: int, seed: int | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The flow's start noise x0 (B, samples, N), drawn as ``FlowPolicy`` draws it from a plain generator."""
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed if seed is not None else 0))
    return torch.randn((batch, samples, n_locations), generator=generator)


def sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def _example_inputs(config: dict, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = config["image_size"]
    return torch.zeros(batch, 2, h, w), torch.zeros(batch, config["samples"], config["columns"])


def save_program(generator: torch.nn.Module, path: Path, config: dict) -> None:
    """Write ``generator`` as ``path`` (``.pt2``: torch.export; ``.onnx``: the ONNX exporter), batch size dynamic."""
    from ..io import save_with

    inputs = _example_inputs(config)
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = ({0: batch}, {0: batch})
    extra = json.dumps(config, sort_keys=True)
    if path.suffix == ".pt2":
        program = torch.export.export(generator, inputs, dynamic_shapes=shapes, strict=False)
        save_with(path, lambda fh: torch.export.save(program, fh, extra_files={"config.json": extra}))
    elif path.suffix == ".onnx":
        import onnx

        quiet = logging.getLogger("torch.onnx")
        level, quiet.level = quiet.level, logging.ERROR  # the exporter logs its registry (torchvision absent…)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(generator, inputs, input_names=["kspace", "noise"],
                                        output_names=["mask", "scores"], dynamic_shapes=shapes, dynamo=True,
                                        verbose=False)
        quiet.setLevel(level)
        model = program.model_proto
        onnx.helper.set_model_props(model, {"flowcs_config": extra})
        save_with(path, lambda fh: fh.write(model.SerializeToString()))
    else:
        raise ConfigError(f"{path}: unknown export format {path.suffix!r}; use one of {', '.join(FORMATS)}")


class ExportedPolicy:
    """A loaded exported policy: ``masks(kspace, seed=…)`` / ``masks(kspace, noise=…)``; ``config`` = its settings."""

    def __init__(self, run, config: dict, runtime: str, device: torch.device):
        self._run, self.config, self.runtime, self.device = run, config, runtime, device
        self.samples, self.n = int(config["samples"]), int(config["columns"])

    def noise(self, batch: int, seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        return noise_for(batch, self.samples, self.n, seed, generator)

    def _outputs(self, kspace: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(kspace.float(), noise.float())

    def masks(self, kspace: torch.Tensor, seed: int | None = None, noise: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
        if noise is None:
            noise = self.noise(kspace.shape[0], seed, generator)
        return self._outputs(kspace, noise)[0]

    def scores(self, kspace: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self._outputs(kspace, noise)[1]

    __call__ = masks


def _load_pt2(path: Path, device: torch.device) -> tuple:
    extra = {"config.json": ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:  # a zip / serde problem of any kind means "not an exported program"
        raise ConfigError(f"{path}: not a torch.export program ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''})") from None
    module = program.module().to(device)

    def run(kspace, noise):
        with torch.inference_mode():
            return module(kspace.to(device), noise.to(device))

    return run, extra["config.json"]


def _load_onnx(path: Path, device: torch.device, threads: int | None) -> tuple:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError(f"{path}: ONNX Runtime is not installed (pip install 'flowcs[onnx]'): {exc}") from None
    try:
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # protobuf / runtime errors of any kind mean "not an ONNX policy"
        raise ConfigError(f"{path}: not a readable ONNX model ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''})") from None

    def run(kspace, noise):
        feeds = {"kspace": kspace.detach().cpu().numpy(), "noise": noise.detach().cpu().numpy()}
        mask, scores = session.run(None, feeds)
        return torch.from_numpy(mask).to(device), torch.from_numpy(scores).to(device)

    return run, meta.get("flowcs_config", "")


def load_exported(path: str | Path, device: str | torch.device = "cpu", threads: int | None = None
                  ) -> ExportedPolicy:
    """Load an exported policy (``.pt2`` with PyTorch, ``.onnx`` with ONNX Runtime); nothing is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no exported policy here (flowcs export --run-dir RUN --out {path})")
    if path.suffix not in FORMATS:
        raise ConfigError(f"{path}: unknown export format {path.suffix!r}; use one of {', '.join(FORMATS)}")
    device = torch.device(device)
    if threads:
        torch.set_num_threads(int(threads))
    run, text = _load_pt2(path, device) if path.suffix == ".pt2" else _load_onnx(path, device, threads)
    try:
        config = json.loads(text) if text else {}
    except json.JSONDecodeError:
        config = {}
    if config.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a flowcs exported policy (format {config.get('format')!r}, want {FORMAT!r})")
    return ExportedPolicy(run, config, "onnxruntime" if path.suffix == ".onnx" else "torch", device)
