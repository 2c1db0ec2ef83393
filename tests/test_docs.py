"""The user guide: CLI reference up to date with the parser, strict MkDocs build, complete API reference."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flowcs.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
HAVE_MKDOCS = all(importlib.util.find_spec(m) is not None for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers"))


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("flowcs",)) -> list[tuple[str, ...]]:
    """Every command path of the parser: ('flowcs', 'train'), ('flowcs', 'data', 'inspect'), …"""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out.append((*path, name))
                out += subcommands(child, (*path, name))
    return out


def public_classes() -> list[str]:
    """``module.Class`` for every class defined (not imported) in a flowcs module, names without a leading _."""
    hooks = _load_script("mkdocs_hooks")
    found = []
    for name, _ in hooks.flowcs_modules():
        module = importlib.import_module(name)
        for cls_name, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__ == name and not cls_name.startswith("_"):
                found.append(f"{name}.{cls_name}")
    return sorted(found)


def test_cli_reference_is_up_to_date():
    gen = _load_script("gen_cli_docs")
    current = (REPO / "docs" / "cli.md").read_text()
    assert current == gen.generate(), "docs/cli.md is out of date: run .venv/bin/python scripts/gen_cli_docs.py"


def test_cli_reference_has_every_subcommand_and_option():
    text = (REPO / "docs" / "cli.md").read_text()
    parser = build_parser()
    paths = subcommands(parser)
    assert {p[1] for p in paths} >= {"train", "evaluate", "ablate", "run", "data", "report"}
    for path in paths:
        assert f"`{' '.join(path)}`" in text, path
    for option in ("--config", "--set", "--smoke", "--resume", "--threads", "--stage", "--ablation", "--out", "--to"):
        assert f"`{option}`" in text, option


def test_nav_lists_the_guide_and_unlisted_pages_are_appended():
    cfg = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    hooks = _load_script("mkdocs_hooks")
    listed = hooks._nav_pages(cfg["nav"])
    for page in ("index.md", "install.md", "quickstart.md", "concepts.md", "experiments.md", "extending.md",
                 "report.md", "reproducing.md", "scaling.md", "troubleshooting.md", "cli.md", "api.md"):
        assert page in listed, page
    assert all((REPO / "docs" / p).is_file() for p in listed)
    config = {"docs_dir": str(REPO / "docs"), "nav": cfg["nav"]}
    hooks.add_unlisted_pages(config)
    on_disk = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    assert set(hooks._nav_pages(config["nav"])) == on_disk


@pytest.mark.skipif(not HAVE_MKDOCS, reason="mkdocs / mkdocstrings[python] not installed (pip install mkdocs "
                                              "'mkdocstrings[python]'); the docs build is not checked")
def test_strict_build_and_complete_references(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for page in (REPO / "docs").rglob("*.md"):  # every page built (pages missing from the nav under "More")
        rel = page.relative_to(REPO / "docs").with_suffix("")
        assert (site / ("" if rel.name == "index" else rel) / "index.html").is_file(), rel
    cli = (site / "cli" / "index.html").read_text()
    for path in subcommands(build_parser()):
        assert f'id="{"-".join(path)}"' in cli, path
    api = (site / "api" / "index.html").read_text()
    classes = public_classes()
    assert len(classes) > 40 and "flowcs.operators.base.Operator" in classes
    missing = [c for c in classes if f'id="{c}"' not in api]
    assert not missing, f"public classes missing from the API reference: {missing}"
    for must in ("flowcs.tasks.base.Task", "flowcs.policies.base.Policy", "flowcs.flow.policy.FlowPolicy",
                 "flowcs.registry.register_experiment", "flowcs.training.loop.fit"):
        assert f'id="{must}"' in api, must
    assert (site / "img" / "report.png").is_file() and 'src="../img/report.png"' in (site / "report" /
                                                                                     "index.html").read_text()


@pytest.mark.skipif(not HAVE_MKDOCS, reason="mkdocs not installed; the docs build is not checked")
def test_strict_build_fails_on_a_broken_link(tmp_path):
    """The guide's own validation settings turn a link to a missing page or anchor into a failed build.

    (Never pass ``-q`` to a strict build: it silences the warnings that strict mode counts, and the build passes.)
    """
    cfg = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the guide](missing.md).\n")
    small = {"site_name": "t", "docs_dir": str(docs), "strict": True, "validation": cfg["validation"],
             "nav": [{"Home": "index.md"}]}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(small))
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "-f", str(tmp_path / "mkdocs.yml"), "-d",
                           str(tmp_path / "site")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "missing.md" in proc.stdout + proc.stderr
    (docs / "index.md").write_text("# Home\n\nSee [a section](#nowhere).\n")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "-f", str(tmp_path / "mkdocs.yml"), "-d",
                           str(tmp_path / "site")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "nowhere" in proc.stdout + proc.stderr
