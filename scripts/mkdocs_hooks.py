"""MkDocs hooks: the API page lists every flowcs module; pages missing from the nav still get built.

``<!-- flowcs-api -->`` in docs/api.md becomes one mkdocstrings block per flowcs module.

The module list is read from ``src/flowcs`` at build time, so the reference always covers every module (and
``tests/test_docs.py`` checks that every public class ends up in the built page).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority

SRC = Path(__file__).resolve().parents[1] / "src"
MARKER = "<!-- flowcs-api -->"
_COPY: Path | None = None


def flowcs_modules() -> list[tuple[str, bool]]:
    """(dotted module name, is_package) for every module under src/flowcs, packages first within a folder."""
    out = []
    for path in sorted((SRC / "flowcs").rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__main__" or any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out.append((".".join(parts), is_pkg))
    return sorted(out, key=lambda m: m[0])


def api_markdown() -> str:
    blocks = []
    for name, is_pkg in flowcs_modules():
        # a package: its docstring only (its members are documented in their own modules)
        blocks.append(f"::: {name}\n" + ("    options:\n      members: false\n" if is_pkg else ""))
    return "\n".join(blocks)


def static_copy() -> Path:
    """A copy of src/flowcs in which every folder is a regular package, for griffe's static analysis.

    Some flowcs folders (flow/, tasks/, training/) are implicit namespace packages; griffe does not descend into
    those inside a regular package. The copy only adds empty ``__init__.py`` files; the sources are unchanged.
    """
    root = Path(tempfile.mkdtemp(prefix="flowcs-api-"))
    shutil.copytree(SRC / "flowcs", root / "flowcs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder in [root / "flowcs", *(p for p in (root / "flowcs").rglob("*") if p.is_dir())]:
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text('"""(namespace package)"""\n')
    return root


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav or []:
        values = item.values() if isinstance(item, dict) else [item]
        for value in values:
            out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def add_unlisted_pages(config) -> None:
    """Pages under docs/ that the nav of mkdocs.yml does not list go to a last "More" section.

    Several people add pages; a page missing from the nav is then still built, linked and link-checked
    instead of failing the strict build as an omitted file.
    """
    docs = Path(config["docs_dir"])
    listed = set(_nav_pages(config["nav"]))
    extra = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))
    extra = [p for p in extra if p not in listed]
    if extra and config["nav"] is not None:
        config["nav"].append({"More": [{_title(docs / p): p} for p in extra]})


@event_priority(100)  # before mkdocstrings reads its handler options
def on_config(config):
    global _COPY
    add_unlisted_pages(config)
    _COPY = static_copy()
    handlers = config.plugins["mkdocstrings"].config["handlers"]
    handlers.setdefault("python", {})["paths"] = [str(_COPY)]
    return config


def on_shutdown():
    if _COPY is not None:
        shutil.rmtree(_COPY, ignore_errors=True)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs hook signature)
    if MARKER in markdown:
        return markdown.replace(MARKER, api_markdown())
    return markdown
