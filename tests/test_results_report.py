"""The report: plots written as PNGs, an ``index.html`` that references only files beside it,
escapes what it shows, loads nothing from a network, and renders in headless Chromium with
every image loaded and no console error."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from pipeline.results import html as report_html
from pipeline.results.report import ReportConfig, make_report
from schemas.results import RESULT_TABLES
from tests import test_results_synth as synth

PNG = b"\x89PNG\r\n\x1a\n"
EXPECTED_PNGS = {"subjects_uar_sample.png", "subjects_uar_segment.png", "confusion.png",
                 "confusion_segments.png", "adaptation.png", "au_heatmap.png", "statuses.png"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    path = make_report(str(folder), synth.manifest(), synth.predictions(), synth.CLASSES, synth.LINEAGE,
                       stage_stats=synth.stage_stats_rows(), segments=synth.segment_map(),
                       au_activations=synth.au_activations(), au_names=synth.AU_NAMES,
                       cfg=ReportConfig(window_len=16))
    return Path(path)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == PNG, f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_plots_are_written_beside_the_page(report):
    pngs = {p.name for p in report.parent.glob("*.png")}
    assert pngs == EXPECTED_PNGS
    for name in pngs:
        width, height = png_size(report.parent / name)
        assert width >= 400 and height >= 300, (name, width, height)
    assert {p.stem for p in report.parent.glob("*.parquet")} == set(RESULT_TABLES)


def test_html_references_only_files_that_exist_beside_it(report):
    page = report.read_text()
    links = Links()
    links.feed(page)
    assert links.refs, "the page links nothing"
    for ref in links.refs:
        assert "/" not in ref and ":" not in ref, f"{ref!r} is not a plain file name beside the page"
        assert (report.parent / ref).is_file(), f"{ref!r} does not exist beside the page"
    referenced = set(links.refs)
    assert EXPECTED_PNGS <= referenced and {f"{n}.parquet" for n in RESULT_TABLES} <= referenced
    assert not {"script", "link", "iframe", "object"} & links.tags
    assert not re.search(r"https?:|//|@import|url\(", page.replace("<!DOCTYPE html>", "")), \
        "the page refers to something outside its folder"
    for section in ("Run summary", "Plots", "Per target subject", "Stage statistics", "run-synth"):
        assert section in page


def test_page_escapes_cells_and_refuses_missing_figures(tmp_path):
    frame = pd.DataFrame({"subject_id": ['<img src=x onerror="alert(1)">&', "t2"], "uar": [float("nan"), 0.5],
                          "model_id": [float("nan"), "m1"]})
    cell = report_html.table_html(frame)
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in cell and "<img" not in cell
    assert "<td>NaN</td>" in cell and '<td class="text"></td>' in cell  # NaN metric, missing id
    with pytest.raises(ValueError, match="'gone.png'"):
        report_html.write_report(str(tmp_path), {}, [report_html.Figure("gone.png", "t", "c")])
    page = Path(report_html.write_report(str(tmp_path), {"subject_metrics": frame}, [],
                                         title="a <b>title</b>")).read_text()
    assert "a &lt;b&gt;title&lt;/b&gt;" in page and "<b>title" not in page


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


# Injected into a copy of the page for the check only: records failed loads and errors, and
# after the load event writes how many images decoded.
PROBE = """<script>
window.__errs = [];
window.addEventListener('error',
  e => window.__errs.push(String(e.message || (e.target && e.target.src))), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const d = document.createElement('div'); d.id = 'autt-check';
  d.textContent = 'images=' + ok + '/' + imgs.length + ' errors=' + window.__errs.length;
  document.body.appendChild(d);
});
</script>"""


def render(browser: str, page: Path, tmp: Path) -> tuple[str, str]:
    """(the probe's line, Chromium's console lines) of ``page`` rendered headless."""
    check = page.parent / f"check-{page.name}"
    check.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
         "--dump-dom", check.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    check.unlink()
    found = re.search(r'<div id="autt-check">([^<]*)</div>', result.stdout)
    assert found, f"the probe did not report (rc {result.returncode}): {result.stderr[-2000:]}"
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    return found.group(1), "\n".join(console)


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium)")
    n = len(EXPECTED_PNGS)
    probe, console = render(browser, report, tmp_path / "profile")
    assert probe == f"images={n}/{n} errors=0" and console == "", (probe, console)
    # The same check fails on a page with a missing image.
    broken = report.parent / "broken.html"
    broken.write_text(report.read_text().replace('src="confusion.png"', 'src="missing.png"'))
    probe, console = render(browser, broken, tmp_path / "profile2")
    os.remove(broken)
    assert probe == f"images={n - 1}/{n} errors=1", probe


def test_plots_refuse_what_they_cannot_draw(tmp_path):
    from pipeline.results import plots

    act = synth.au_activations()
    out = str(tmp_path / "x.png")
    with pytest.raises(ValueError, match="47 activations per frame but 3 AU names"):
        plots.au_heatmap(act, synth.AU_NAMES[:3], out, "t1-v1-c0")
    with pytest.raises(ValueError, match="'nobody'"):
        plots.au_heatmap(act, synth.AU_NAMES, out, "nobody")
    two = pd.concat([act, act.assign(model_id="other")])
    with pytest.raises(ValueError, match="choose one with method= and model_id="):
        plots.au_heatmap(two, synth.AU_NAMES, out, "t1-v1-c0")
    with pytest.raises(ValueError, match="'war'"):
        ReportConfig(metric="war")
    assert not os.path.exists(out)
