"""Arguments every experiment command shares (``train``, ``evaluate``, ``ablate``, ``run``, ``compare``), the
run context they resolve to, and the ``python -m`` entry of sub-commands defined next to their code — in one
place for the CLI and those sub-commands."""

from __future__ import annotations

import argparse
import sys

from .errors import ConfigError, FlowcsError

__all__ = ["add_run_args", "context_from_args", "set_threads", "standalone_main"]


def standalone_main(add_parser, run, argv: list[str] | None = None) -> int:
    """``python -m flowcs.<module> …`` for a sub-command module (``add_parser(subparsers)``, ``run(args)``), with
    the CLI's conventions: a user error is one line ``flowcs: error: …`` and its exit code; ``--debug`` re-raises."""
    parser = argparse.ArgumentParser(prog="flowcs")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except FlowcsError as exc:
        if args.debug:
            raise
        print(f"flowcs: error: {exc}", file=sys.stderr)
        return exc.exit_code


def add_run_args(p: argparse.ArgumentParser) -> None:
    from .registry import available

    p.add_argument("experiment", help=f"experiment name ({', '.join(available('experiment'))})")
    p.add_argument("--config", metavar="FILE", help="YAML config file (keys as in configs/<experiment>.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set flow.loop.epochs=2 (repeatable)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny preset (seconds to a minute on a CPU); results go under the run directory")
    p.add_argument("--run-dir", metavar="DIR", help="checkpoints and logs (default runs/<experiment>[-smoke])")
    p.add_argument("--results", metavar="DIR",
                   help="where metrics.json and figures go (default results/<experiment>; smoke: <run-dir>/results)")
    p.add_argument("--data", metavar="DIR",
                   help="data root holding the data sets (mnist/, faces_celeba_10k/, mri_…; default: $FLOWCS_DATA, "
                        "else ../shared/data, else the user cache)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoints in --run-dir")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads per process (default: torch's choice, or $OMP_NUM_THREADS); use 1 when "
                        "several jobs share the cores")


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def context_from_args(args, use_run_config: bool = False, extra: dict | None = None, lock: str | None = None):
    """The :class:`~flowcs.experiments.RunContext` of an experiment command's arguments.

    ``use_run_config``: commands that read a trained run start from the run directory's own ``config.yaml``.
    ``lock``: ``"create"`` (commands that train: make the run directory and take its lock) or ``"existing"``
    (commands that read a run and may add stages or results: take the lock when the directory exists).
    """
    from .experiments import build_context
    from .rundir import lock_run_dir

    set_threads(args.threads)
    ctx = build_context(args.experiment, args.config, args.overrides, args.smoke, args.run_dir, args.results,
                        args.data, args.seed, args.device, args.resume, use_run_config=use_run_config, extra=extra)
    if lock and ctx.dist.is_main and (lock == "create" or ctx.run_dir.is_dir()):
        lock_run_dir(ctx.run_dir)
    return ctx
