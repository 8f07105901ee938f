"""The whole report in one call: tables, Parquet files, plots and ``index.html``.

In: a local output folder, manifest rows, prediction rows, the ordered class list and the
run's lineage (pandas DataFrames or pyarrow Tables the caller read from the workspace), and
optionally the stages' ``stats`` rows, a sample -> segment mapping, per-frame AU activations
with the AU names, and a ``ReportConfig``. Out: in that folder, ``<table>.parquet`` for every
results table, the PNG plots and ``index.html``; returns the page's path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from pipeline.results import plots
from pipeline.results.html import Figure, write_report
from pipeline.results.join import as_frame
from pipeline.results.summary import DEFAULT_BOOTSTRAP, BootstrapConfig
from pipeline.results.tables import build_tables, write_tables
from schemas.results import METRICS


@dataclass(frozen=True)
class ReportConfig:
    metric: str = "uar"                        # metric of the per-subject bar plots
    bootstrap: BootstrapConfig = DEFAULT_BOOTSTRAP  # CI of the subject means
    heatmap_sample: str | None = None          # sample of the AU heat map; None: the first with activations
    window_len: int | None = None              # window length L, to mark the selected window; None: no mark
    title: str = "CLIP-AUTT results"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"report metric {self.metric!r} is not one of {METRICS}")
        if self.window_len is not None and self.window_len < 1:
            raise ValueError(f"window_len must be positive, got {self.window_len}")


DEFAULT_REPORT = ReportConfig()


def window_start(predictions: pd.DataFrame, sample_id: str, model_id: str | None, method: str) -> int | None:
    """The window the final prediction of ``sample_id`` selected with ``model_id``: that of
    ``method`` if it records one, else clip-autt's, else any method's; None if none does."""
    rows = predictions[(predictions["sample_id"] == sample_id) & predictions["step"].isna()
                       & predictions["window_start"].notna()]
    if model_id is not None:
        rows = rows[rows["model_id"] == model_id]
    for choice in (rows[rows["method"] == method], rows[rows["method"] == "clip-autt"], rows):
        if len(choice):
            return int(choice["window_start"].iloc[0])
    return None


def write_plots(folder: str, tables: Mapping[str, pd.DataFrame], classes: Sequence[str],
                predictions: pd.DataFrame, au_activations: pd.DataFrame | None = None,
                au_names: Sequence[str] | None = None, cfg: ReportConfig = DEFAULT_REPORT) -> list[Figure]:
    """Every plot the tables allow, as PNG files in ``folder``."""
    out: list[Figure] = []

    def add(name: str, title: str, caption: str, draw) -> None:
        draw(os.path.join(folder, name))
        out.append(Figure(name, title, caption))

    b = cfg.bootstrap
    ci = (f"{b.level:.0%} bootstrap CI over target subjects ({b.method}, {b.n_resamples} resamples, "
          f"seed {b.seed})")
    levels = ["sample"] + (["segment"] if "segments" in tables else [])
    for level in levels:
        name = plots.METRIC_NAMES[cfg.metric]
        add(f"subjects_{cfg.metric}_{level}.png", f"{name} per target subject ({level} level)",
            "Bars: each method's value per subject, averaged over its runs (whiskers: standard deviation "
            f"over runs); last group: the mean over subjects with its {ci}. A subject holding one class has "
            "no UAR, F1 or AUC (n/a): it is counted but left out of the means.",
            lambda p, lv=level: plots.subject_bars(tables["subject_metrics"], tables["method_summary"], p,
                                                   cfg.metric, lv))
    add("confusion.png", "Confusion matrices (sample level)",
        "Final predictions of every method, all target subjects and runs pooled; colour: share of the "
        "true class.", lambda p: plots.confusion_matrices(tables["samples"], classes, p))
    if "segments" in tables:
        final = tables["segments"][tables["segments"]["step"].isna()]
        add("confusion_segments.png", "Confusion matrices (segment level)",
            "Segments: the mean of their chunks' probabilities.",
            lambda p: plots.confusion_matrices(final, classes, p))
    traj = tables["trajectories"]
    if len(traj[traj["level"] == "sample"]):
        add("adaptation.png", "Adaptation trajectories",
            "Metric after each adaptation step: thin lines per target subject and run, thick line their "
            "mean; dashed: the final mean of methods without steps. The trajectory never chooses a step.",
            lambda p: plots.adaptation_curves(traj, p, "sample", tables["method_summary"]))
    if au_activations is not None and len(au_activations):
        if au_names is None:
            raise ValueError("AU activations were given without the AU names to label them")
        act = as_frame(au_activations, "AU activations", ("sample_id", "method", "model_id", "clip_pos",
                                                          "frame_index", "activations"))
        sample = cfg.heatmap_sample or act["sample_id"].iloc[0]
        first = act[act["sample_id"] == sample]
        if first.empty:
            raise ValueError(f"no AU activations of the chosen sample {sample!r}")
        method, model = first["method"].iloc[0], first["model_id"].iloc[0]
        start = window_start(predictions, sample, model, method) if cfg.window_len else None
        add("au_heatmap.png", f"AU activations over time, sample {sample}",
            f"Per-frame AU activations (5 x cosine) of the evaluation clip ({method}, model {model}); "
            + ("red: the selected window." if start is not None else "no selected window recorded."),
            lambda p: plots.au_heatmap(act, au_names, p, sample, start, cfg.window_len, method, model))
    stats = tables.get("stage_stats", pd.DataFrame({"stage": [], "status_counts": []}))
    add("statuses.png", "Rows per stage and status",
        "Output rows of each stage (samples, frames or predictions) by status: what was lost where, and why.",
        lambda p: plots.stage_statuses(stats, p, tables["samples"]))
    return out


def make_report(folder: str, manifest: pd.DataFrame | pa.Table, predictions: pd.DataFrame | pa.Table,
                classes: Sequence[str], lineage: Mapping[str, str | None], *,
                stage_stats: pd.DataFrame | pa.Table | None = None,
                segments: pd.DataFrame | pa.Table | None = None,
                au_activations: pd.DataFrame | pa.Table | None = None, au_names: Sequence[str] | None = None,
                cfg: ReportConfig = DEFAULT_REPORT) -> str:
    """Build every results table, write it as Parquet, draw the plots and write
    ``<folder>/index.html``; returns that path."""
    os.makedirs(folder, exist_ok=True)
    preds = as_frame(predictions, "predictions")
    if "window_start" not in preds.columns:
        preds["window_start"] = None
    tables = build_tables(manifest, preds, classes, lineage, stage_stats=stage_stats, segments=segments,
                          bootstrap=cfg.bootstrap)
    files = write_tables(tables, folder, lineage)
    figures = write_plots(folder, tables, classes, preds, au_activations, au_names, cfg)
    return write_report(folder, tables, figures, files, cfg.title)
