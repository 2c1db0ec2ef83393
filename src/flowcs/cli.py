"""Command-line interface: ``flowcs train | evaluate | ablate | run | data``.

Errors a user can fix (bad config, missing/corrupt data, incompatible
checkpoint) end with one line on stderr and a non-zero exit code; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import __version__
from .cli_common import add_run_args, context_from_args
from .errors import ConfigError, FlowcsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowcs", description="Learn where to measure: flow-matching sampling policies for compressed sensing.")
    parser.add_argument("--version", action="version", version=f"flowcs {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import a plug-in module that registers experiments/operators/tasks/policies "
                             "(repeatable; also $FLOWCS_PLUGINS)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train the task models and the flow policy of an experiment")
    add_run_args(p)
    p.add_argument("--stage", action="append", metavar="STAGE",
                   help="train only this stage (repeatable; mnist-classify: classifier, classifier-full, unet, flow)")

    p = sub.add_parser("evaluate", help="evaluate trained policies on the test set; write metrics.json + figures")
    add_run_args(p)

    p = sub.add_parser("ablate", help="gate (a, b) and loss-variant ablation from the trained task models")
    add_run_args(p)

    p = sub.add_parser("run", help="train every stage, then evaluate (the whole experiment)")
    add_run_args(p)
    p.add_argument("--ablation", action="store_true", help="also run the ablation afterwards")

    p = sub.add_parser("config", help="print the effective configuration of an experiment (defaults, --smoke, "
                                      "a run's config.yaml, --config, --set) as YAML")
    add_run_args(p)

    data = sub.add_parser("data", help="download or inspect data sets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    d = dsub.add_parser("download", help="download a data set (needs internet)")
    d.add_argument("dataset", choices=["mnist"])
    d.add_argument("--to", metavar="DIR", help="target folder (default: <user cache>/data/<dataset>)")
    d = dsub.add_parser("inspect", help="validate a data file or folder and print a summary")
    d.add_argument("path")
    for module in _plugins().values():
        module.add_parser(sub)
    return parser


#: subcommands implemented next to the code they drive: module with add_parser(subparsers) and run(args)
PLUGIN_MODULES = {"mri": "flowcs.experiments.mri_mask", "compare": "flowcs.experiments.compare",
                  "bench": "flowcs.bench", "export": "flowcs.export", "report": "flowcs.report",
                  "reproduce": "flowcs.reproduce"}


def _plugins() -> dict:
    import importlib

    found = {}
    for name, path in PLUGIN_MODULES.items():
        try:
            found[name] = importlib.import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name != path:
                raise
    return found


def _cmd_train(args) -> int:
    from .experiments import get_experiment, record_run

    exp = get_experiment(args.experiment)
    for stage in args.stage or []:
        if stage not in exp.stages:
            raise ConfigError(f"unknown stage {stage!r} for {args.experiment}; choose from {', '.join(exp.stages)}")
    ctx = context_from_args(args, lock="create")
    record_run(ctx)
    exp.train(ctx, args.stage)
    _say(ctx, f"trained {', '.join(args.stage or exp.stages)} → {ctx.run_dir}")
    return 0


def _cmd_evaluate(args) -> int:
    from .experiments import get_experiment

    ctx = context_from_args(args, use_run_config=True, lock="existing")
    payload = get_experiment(args.experiment).evaluate(ctx)
    _say(ctx, _summary(payload, ctx.results_dir))
    return 0


def _cmd_ablate(args) -> int:
    from .experiments import get_experiment

    ctx = context_from_args(args, use_run_config=True, lock="existing")
    payload = get_experiment(args.experiment).ablate(ctx)
    _say(ctx, _summary(payload, ctx.results_dir, "ablation"))
    return 0


def _cmd_run(args) -> int:
    from .experiments import get_experiment, record_run

    exp = get_experiment(args.experiment)
    ctx = context_from_args(args, lock="create")
    record_run(ctx)
    exp.train(ctx)
    payload = exp.evaluate(ctx)
    _say(ctx, _summary(payload, ctx.results_dir))
    if args.ablation:
        _say(ctx, _summary(exp.ablate(ctx), ctx.results_dir, "ablation"))
    return 0


def _summary(payload: dict, results_dir: Path, name: str = "metrics") -> str:
    from .evaluation.tables import markdown_table

    scale = 100 if payload["metric"] == "accuracy" else 1
    return f"{markdown_table(payload, scale)}written {results_dir / (name + '.json')}"


def _say(ctx, text: str) -> None:
    if ctx.dist.is_main:
        print(text)


def _cmd_data(args) -> int:
    if args.data_command == "download":
        from .data import download_mnist, user_cache_dir

        to = Path(args.to) if args.to else user_cache_dir() / "data" / args.dataset
        for path in download_mnist(to):
            print(path)
        return 0
    from .data.inspect import inspect_path

    report = inspect_path(Path(args.path))
    print(report.render())
    return 0 if report.ok else 1


def _cmd_config(args) -> int:
    import yaml

    from .experiments import get_experiment
    from .experiments.context import resolve_config

    exp = get_experiment(args.experiment)
    run_cfg = Path(args.run_dir) / "config.yaml" if args.run_dir else None
    _, cfg = resolve_config(exp, args.smoke, run_cfg if run_cfg and run_cfg.is_file() else None, args.config,
                            args.overrides)
    print(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), end="")
    return 0


COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "ablate": _cmd_ablate, "run": _cmd_run,
            "config": _cmd_config, "data": _cmd_data}


def _leave_process_group(clean: bool) -> None:
    if "WORLD_SIZE" in os.environ:  # only under torchrun: importing torch.distributed is not free
        from .training.distributed import shutdown

        shutdown(clean)


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler's time limit, ``kill``) outside training ends like Ctrl-C: one line, exit 130.

    Training installs its own handler (checkpoint first), and puts this one back afterwards.
    """
    import signal

    def handler(signum, _frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (flowcs called from a worker thread)
        pass


def main(argv: list[str] | None = None) -> int:
    _stop_on_sigterm()
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.time()
    try:
        if args.plugin:
            from .registry import load_plugins

            load_plugins(args.plugin)
        command = COMMANDS.get(args.command) or _plugins()[args.command].run
        code = command(args)
        _leave_process_group(clean=True)
    except FlowcsError as exc:
        _leave_process_group(clean=False)
        if args.debug:
            raise
        print(f"flowcs: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        _leave_process_group(clean=False)
        print("flowcs: error: interrupted (finished stages and the last checkpoints are kept; rerun the same "
              "command with --resume to continue)", file=sys.stderr)
        return 130
    if args.command in ("train", "run", "ablate", "evaluate") and os.environ.get("RANK", "0") == "0":
        print(f"wall time {time.time() - started:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
