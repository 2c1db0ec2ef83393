"""``flowcs report``: one self-contained HTML page, checked in headless Chromium when it is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowcs.cli import main
from flowcs.errors import DataError
from flowcs.evaluation import figures
from flowcs.evaluation.tables import metrics_payload, write_results
from flowcs.report import collect, render

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def make_results(folder: Path) -> Path:
    """A results folder as the experiments write it: metrics + ablation + compare, run.json, two figures."""
    rows = {"flow": {"mean": [0.61, 0.83], "std_seeds": [0.01, 0.02], "n": 100},
            "random": {"mean": [0.42, 0.70], "std_seeds": [0.03, 0.01], "n": 100},
            "random<&>": {"mean": [0.40, 0.69], "std_seeds": [0.0, 0.0], "ci95": [[0.38, 0.42], [0.66, 0.72]],
                          "n": 100},
            "full": {"mean": [0.97, 0.97], "std_seeds": [0.0, 0.0], "n": 100}}
    payload = metrics_payload("demo-exp", "accuracy", True, "percent", [1.0, 4.0], rows,
                              extra_metrics={"mae": {"flow": {"mean": [0.2, 0.1]}, "random": {"mean": [0.3, 0.2]}}},
                              margins={"flow_vs_random": [0.19, 0.13]}, seeds=2, test_images=100,
                              data={"test": "official IDX"}, notes="a note <b>not bold</b>")
    meta = {"command": "flowcs run demo-exp", "git_commit": "abc123", "torch": "2.13.0",
            "config": {"flow": {"loop": {"epochs": 3}}, "eval": {"seeds": 2}}}
    write_results(folder, "metrics", payload, meta, table_scale=100)
    ablation = metrics_payload("demo-exp", "accuracy", True, "percent", [1.0, 4.0],
                               {"a=30,b=1": {"mean": [0.6, 0.8]}, "a=10,b=2": {"mean": [0.5, 0.79]}})
    write_results(folder, "ablation", ablation, meta, table_scale=100)
    compare = metrics_payload("demo-exp", "psnr", True, "acceleration", [4, 8],
                              {"flow": {"mean": [30.1, 27.2]}, "loupe": {"mean": [29.5, 27.9]},
                               "full": {"mean": [40.0, 40.0]}})
    (folder / "compare.json").write_text(json.dumps(compare))
    figures.plot_metric_vs_budget(payload, folder / "accuracy_vs_rate.png", scale=100)
    figures.plot_density({"1%": torch.rand(8, 8), "4%": torch.rand(8, 8)}, folder / "density.png", title="density")
    (folder / "notes.json").write_text(json.dumps({"anything": [1, 2]}))
    return folder


def test_render_has_every_table_figure_and_the_metadata(tmp_path):
    res = make_results(tmp_path / "results")
    found = collect(res)
    assert list(found["results"]) == ["metrics.json", "compare.json", "ablation.json"]
    assert set(found["runs"]) == {"run.json", "ablation.run.json"} and list(found["other"]) == ["notes.json"]
    page = render(res)
    assert page.count('<table class="results"') == 4  # metrics, its extra metric, compare, ablation
    assert page.count('<img alt="') == 2 and page.count("data:image/png;base64,") == 2
    assert "src=\"http" not in page and "<script" not in page and "<link" not in page  # self-contained
    assert "61 ± 1" in page and "83 ± 2" in page  # accuracy shown in percent with its std
    assert '<td class="best">61 ± 1</td>' in page  # best policy of the column highlighted, not the oracle
    assert "<td>97</td>" in page and '<td class="best">97' not in page and '<td class="best">40' not in page
    assert "40 ± 0" not in page
    assert "40 [38, 42]" in page  # one seed, no spread across seeds: the 95 % interval, never "± 0"
    conclusion = page[page.index('id="conclusion"'):page.index("</section>", page.index('id="conclusion"'))]
    assert "4×: flow 30.1 — ahead of or tied with the best other policy, loupe 29.5" in conclusion
    assert "8×: flow 27.2 — behind the best other policy, loupe 27.9" in conclusion  # never "full"
    assert "SMOKE" not in page
    assert '<td class="best">0.1</td>' in page  # lower-is-better extra metric (mae): the smallest is best
    assert '<td class="best">27.9</td>' in page  # compare.json: loupe wins at 8x
    assert "random&lt;&amp;&gt;" in page and "&lt;b&gt;not bold&lt;/b&gt;" in page  # escaped
    assert "abc123" in page and "flow.loop.epochs" in page and "flow_vs_random" in page
    assert "4×" in page and "1%" in page


def test_a_smoke_run_says_so_in_the_title(tmp_path):
    res = make_results(tmp_path / "results")
    meta = json.loads((res / "run.json").read_text())
    (res / "run.json").write_text(json.dumps({**meta, "smoke": True}))
    page = render(res)
    assert "<h1>flowcs report — demo-exp (SMOKE RUN: tiny settings, not a result)</h1>" in page


def test_cli_writes_the_page_and_errors_are_one_line(tmp_path, capsys):
    res = make_results(tmp_path / "results")
    assert main(["report", str(res)]) == 0
    assert (res / "report.html").stat().st_size > 10_000
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(res), "--out", str(out), "--title", "My <title>"]) == 0
    assert "<title>My &lt;title&gt;</title>" in out.read_text()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.strip() == f"flowcs: error: {tmp_path / 'missing'}: no such results folder"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no results file"):
        render(empty)
    (empty / "metrics.json").write_text("{not json")
    assert main(["report", str(empty)]) == 1
    assert "not a readable JSON file" in capsys.readouterr().err


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def check_in_browser(page: Path, tmp_path: Path, n_tables: int, n_images: int) -> None:
    """Load the page in headless Chromium: tables in the DOM, every image decoded, a non-blank screenshot."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the HTML itself was checked")
    # a test copy with one line of script that records each image's decoded width in the DOM
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>window.onload=()=>document.body.setAttribute('data-widths',"
                   "Array.from(document.images).map(i=>i.naturalWidth).join(','))</script></body>"))
    dom = chromium(["--virtual-time-budget=5000", "--dump-dom", f"file://{probe}"], tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert html.count('<table class="results"') == n_tables
    widths = re.search(r'data-widths="([0-9,]*)"', html)
    assert widths, "the page did not finish loading"
    decoded = [int(w) for w in widths.group(1).split(",") if w]
    assert len(decoded) == n_images and all(w > 100 for w in decoded), decoded
    shot = tmp_path / "shot.png"
    r = chromium(["--window-size=1200,1400", f"--screenshot={shot}", f"file://{page}"], tmp_path / "profile2")
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1200, 1400)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # text and figures, not a blank page


def test_report_renders_in_headless_chromium(tmp_path):
    res = make_results(tmp_path / "results")
    assert main(["report", str(res)]) == 0
    check_in_browser(res / "report.html", tmp_path, n_tables=4, n_images=2)


@pytest.mark.slow
def test_report_of_a_real_smoke_run_in_headless_chromium(tmp_path):
    """A real results folder: `flowcs run mnist-classify --smoke` (shrunk further), then its report."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED_DATA / 'mnist'}")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "flowcs", "run", "mnist-classify", "--smoke", "--run-dir", str(run),
           "--data", str(SHARED_DATA), "--threads", "1", "--set", "data.train_subset=512",
           "--set", "data.test_subset=128"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = run / "results"
    pngs = sorted(res.glob("*.png"))
    assert pngs and (res / "metrics.json").is_file() and (res / "run.json").is_file()
    out = tmp_path / "report.html"
    assert main(["report", str(res), "--out", str(out)]) == 0
    page = out.read_text()
    metrics = json.loads((res / "metrics.json").read_text())
    for name in metrics["policies"]:
        assert f"<td>{name}</td>" in page
    assert page.count("data:image/png;base64,") == len(pngs)
    check_in_browser(out, tmp_path, n_tables=page.count('<table class="results"'), n_images=len(pngs))
