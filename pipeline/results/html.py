"""The static HTML report: one page that opens from disk, no server, no network.

In: the results tables (DataFrames keyed by table name), the plots written beside the page
(``Figure`` entries: file name, title, caption) and the Parquet files written beside it.
Out: ``index.html`` in the given folder; every cell and caption HTML-escaped, the style
inline, no script, no external CSS, JS or font, and only relative links to files that exist
beside the page.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import io
from schemas.results import METRICS

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.text { text-align: left; }
figure { display: inline-block; margin: 0.6em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.8em; color: #555; max-width: 900px; }
details { margin: 0.6em 0; } summary { cursor: pointer; font-weight: bold; }
.note { font-size: 0.85em; color: #555; } .scroll { overflow-x: auto; }
"""
# Tables longer than this show their first rows only; the Parquet file beside the page has all.
MAX_ROWS = 300


@dataclass(frozen=True)
class Figure:
    file: str      # PNG file name, beside index.html
    title: str
    caption: str


def _cell(value, numeric_column: bool = True) -> tuple[str, bool]:
    """Text of one cell (escaped later) and whether it is numeric (right-aligned). A missing
    value is blank, but a NaN in a numeric column reads NaN (an undefined metric)."""
    if value is None or value is pd.NA:
        return "", False
    if not numeric_column and isinstance(value, (float, np.floating)) and math.isnan(value):
        return "", False
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_cell(v)[0]}" for k, v in value.items()), False
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_cell(v)[0] for v in value) + "]", False
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), False
    if isinstance(value, (float, np.floating)):
        return ("NaN" if math.isnan(value) else f"{value:.3f}"), True
    if isinstance(value, (int, np.integer)):
        return str(int(value)), True
    return str(value), False


def table_html(frame: pd.DataFrame, max_rows: int = MAX_ROWS) -> str:
    """``frame`` as an escaped HTML table (its first ``max_rows`` rows)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    numeric_columns = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    for row in frame.head(max_rows).itertuples(index=False):
        cells = []
        for value, numeric_column in zip(row, numeric_columns):
            text, numeric = _cell(value, numeric_column)
            cls = "" if numeric else ' class="text"'
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (f'<p class="note">First {max_rows} of {len(frame)} rows.</p>' if len(frame) > max_rows else "")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f"</table></div>{more}")


def overall_view(overall: pd.DataFrame) -> pd.DataFrame:
    """``method_overall`` with one row per (level, method): "mean ± std (runs)" per metric."""
    rows = []
    for (level, backbone, method), g in overall.groupby(["level", "backbone_id", "method"], dropna=False,
                                                         sort=False):
        row = {"level": level, "backbone": backbone, "method": method}
        for _, r in g.iterrows():
            std = "" if pd.isna(r["std"]) else f" ± {r['std']:.3f}"
            runs = f"{r['n_runs']} run{'s' if r['n_runs'] != 1 else ''}"
            row[r["metric"]] = "NaN" if pd.isna(r["mean"]) else f"{r['mean']:.3f}{std} ({runs})"
        rows.append(row)
    return pd.DataFrame(rows, columns=["level", "backbone", "method", *METRICS])


def _summary_view(run_summary: pd.DataFrame) -> pd.DataFrame:
    row = run_summary.iloc[0]
    return pd.DataFrame({"field": list(run_summary.columns), "value": [_cell(v)[0] for v in row]})


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _details(title: str, body: str) -> str:
    return f"<details><summary>{html.escape(title)}</summary>{body}</details>"


def write_report(folder: str, tables: Mapping[str, pd.DataFrame], figures: Sequence[Figure],
                 files: Mapping[str, str] | None = None, title: str = "CLIP-AUTT results") -> str:
    """Write ``<folder>/index.html`` gathering the summary, the tables and the figures (each
    ``Figure.file`` must exist in ``folder``); ``files`` (name -> path in ``folder``) are
    linked at the end. Returns the page's path."""
    for fig in figures:
        if not os.path.isfile(os.path.join(folder, fig.file)) or os.path.basename(fig.file) != fig.file:
            raise ValueError(f"figure {fig.file!r} is not a file beside the report in {folder}")
    links = {}
    for name, path in (files or {}).items():
        if os.path.dirname(os.path.abspath(path)) != os.path.abspath(folder) or not os.path.isfile(path):
            raise ValueError(f"table file {path!r} is not a file beside the report in {folder}")
        links[name] = os.path.basename(path)
    run_id = tables["run_summary"]["run_id"].iloc[0] if "run_summary" in tables else None
    parts = [f"<h1>{html.escape(title)}{' — run ' + html.escape(str(run_id)) if run_id else ''}</h1>"]
    if "run_summary" in tables:
        parts.append(_section("Run summary", table_html(_summary_view(tables["run_summary"])), "summary"))
    if "method_overall" in tables:
        parts.append(_section(
            "Methods: mean ± standard deviation over folds and seeds of the subject means",
            table_html(overall_view(tables["method_overall"])), "overall"))
    if figures:
        body = "".join(f'<figure><img src="{html.escape(f.file)}" alt="{html.escape(f.title)}"><figcaption>'
                       f"<b>{html.escape(f.title)}.</b> {html.escape(f.caption)}</figcaption></figure>"
                       for f in figures)
        parts.append(_section("Plots", body, "plots"))
    if "method_summary" in tables:
        note = ('<p class="note">Per run (model, fold, seed): mean and sample standard deviation over '
                "target subjects (subjects with one class are counted in n_subjects but left out of UAR, "
                "F1 and AUC), the pooled figure over all target samples, and a bootstrap CI of the mean "
                "with subjects resampled (method and resamples in the table).</p>")
        parts.append(_section("Per run, over target subjects", note + table_html(tables["method_summary"]),
                              "runs"))
    if "subject_metrics" in tables:
        parts.append(_section("Per target subject", table_html(tables["subject_metrics"]), "subjects"))
    if "stage_stats" in tables:
        parts.append(_section("Stage statistics", table_html(tables["stage_stats"]), "stages"))
    detail = [(n, t) for n, t in (("trajectories", "Adaptation trajectories"), ("segments", "Segments"),
                                  ("samples", "Per sample (labels joined)")) if n in tables]
    if detail:
        parts.append(_section("Details", "".join(
            _details(f"{t} ({len(tables[n])} rows)", table_html(tables[n])) for n, t in detail), "details"))
    if links:
        items = "".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a> ({html.escape(n)})</li>'
                        for n, f in links.items())
        parts.append(_section("Tables (Parquet, beside this page)", f"<ul>{items}</ul>", "files"))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    path = os.path.join(folder, "index.html")
    io.write_text_atomic(path, page)
    return path
