"""PNG plots of the results tables (matplotlib's Agg canvas; no pyplot, no display).

In: results tables as DataFrames (``subject_metrics``, ``method_summary``, ``samples``,
``trajectories``, ``stage_stats``), per-frame AU activations (``schemas.tables.AU_ACTIVATIONS``
rows) with the AU names, and a path. Out: one PNG per call, written to that path (whose
name is returned): per-subject bars comparing methods with the bootstrap CIs; confusion
matrices; adaptation curves; an AU heat map of one sample with its selected window; rows
lost per stage and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pipeline import io
from pipeline.results.stats import as_dict
from schemas.results import METRICS
from schemas.tables import METHODS

METRIC_NAMES = {"accuracy": "accuracy (WAR)", "uar": "UAR (macro recall)", "f1": "macro F1", "auc": "ROC-AUC"}
# The unit of a stage's rows, for the status plot.
STAGE_UNITS = {"ingest": "samples", "faces": "frames", "embed": "frames", "faces+embed": "frames",
               "text_features": "prompts", "predictions": "final rows"}
DPI = 110


def _methods(frame: pd.DataFrame) -> list[str]:
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(frame["method"].unique(), key=lambda m: (order.get(m, len(order)), m))


def _colors(methods: Sequence[str]) -> dict[str, tuple]:
    """One fixed colour per method (its place in the vocabulary), the same in every plot."""
    cmap = colormaps["tab10"]
    place = {m: METHODS.index(m) if m in METHODS else len(METHODS) + i for i, m in enumerate(methods)}
    return {m: cmap(p % 10) for m, p in place.items()}


def _save(fig: Figure, path: str) -> str:
    buf = BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    io.write_bytes_atomic(path, buf.getvalue())
    return path


def _level(frame: pd.DataFrame, level: str) -> pd.DataFrame:
    got = frame[frame["level"] == level] if "level" in frame.columns else frame
    if got.empty:
        raise ValueError(f"no {level!r}-level rows to plot")
    return got


def subject_bars(subjects: pd.DataFrame, summary: pd.DataFrame, path: str, metric: str = "uar",
                 level: str = "sample") -> str:
    """Bars per target subject and method (mean over the method's runs; whiskers: standard
    deviation over runs), then the mean over subjects with its bootstrap CI (the CI bounds
    averaged over runs when a method has several)."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    subjects, summary = _level(subjects, level), _level(summary, level)
    summary = summary[summary["metric"] == metric]
    methods, names = _methods(subjects), sorted(subjects["subject_id"].unique())
    colors, width = _colors(methods), 0.8 / max(len(methods), 1)
    fig = Figure(figsize=(max(6.0, 1.1 * (len(names) + 1) * max(1, len(methods) / 3)), 4.2))
    ax = fig.add_subplot()
    for i, method in enumerate(methods):
        per = subjects[subjects["method"] == method].groupby("subject_id")[metric]
        mean, std = per.mean().reindex(names), per.std().reindex(names)
        runs = summary[summary["method"] == method]
        x = np.arange(len(names) + 1) + (i - (len(methods) - 1) / 2) * width
        values = np.append(mean.to_numpy(float), runs["mean"].astype(float).mean())
        low = np.clip(np.append(mean - std, runs["ci_low"].astype(float).mean()), 0, 1)
        high = np.clip(np.append(mean + std, runs["ci_high"].astype(float).mean()), 0, 1)
        ax.bar(x, np.nan_to_num(values), width, color=colors[method], label=method)
        err = np.vstack([values - low, high - values])  # NaN (one run, no CI): no whisker
        ax.errorbar(x, values, yerr=err, fmt="none", ecolor="black", capsize=2, lw=0.8)
        for xi, v in zip(x, values):
            if np.isnan(v):
                ax.text(xi, 0.02, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
    one_class = subjects.groupby("subject_id")["n_classes"].max().reindex(names) < 2
    ax.set_xticks(np.arange(len(names) + 1),
                  [f"{s}\n(1 class)" if one_class[s] else s for s in names] + ["mean over\nsubjects"])
    ax.axvline(len(names) - 0.5, color="grey", lw=0.6, ls=":")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(METRIC_NAMES[metric])
    ci = summary.iloc[0] if len(summary) else None
    note = (f"mean: {ci['ci_level']:.0%} bootstrap CI over subjects ({ci['ci_method']}, "
            f"{ci['ci_resamples']} resamples)" if ci is not None else "")
    ax.set_title(f"{METRIC_NAMES[metric]} per target subject ({level} level)\n{note}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrices(samples: pd.DataFrame, classes: Sequence[str], path: str) -> str:
    """One confusion matrix per method over its scored final predictions (all target
    subjects and runs pooled): counts, colour = share of the true class."""
    from sklearn.metrics import confusion_matrix

    scored = samples[(samples["status"] == "ok") & samples["label_index"].notna()]
    methods = _methods(scored)
    if not methods:
        raise ValueError("no scored predictions to draw confusion matrices from")
    cols = min(3, len(methods))
    rows = -(-len(methods) // cols)
    fig = Figure(figsize=(3.4 * cols, 3.2 * rows))
    for i, method in enumerate(methods):
        g = scored[scored["method"] == method]
        cm = confusion_matrix(g["label_index"].astype(int), g["pred"].astype(int), labels=range(len(classes)))
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (r, c), n in np.ndenumerate(cm):
            ax.text(c, r, f"{n}\n{share[r, c]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if share[r, c] > 0.6 else "black")
        ax.set_xticks(range(len(classes)), classes, fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        runs = g[["model_id", "fold", "seed"]].astype(str).drop_duplicates()
        ax.set_title(f"{method}\n{len(g)} predictions, {len(runs)} run(s)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def adaptation_curves(trajectories: pd.DataFrame, path: str, level: str = "sample",
                      reference: pd.DataFrame | None = None) -> str:
    """Metric against adaptation step: thin lines per (subject, run), a thick line for the
    mean over them; ``reference`` (``method_summary``) adds each method's final mean without
    steps (CLIP-AU, zero-shot) as a dashed level."""
    traj = _level(trajectories, level)
    methods = _methods(traj)
    colors = _colors(methods + (_methods(reference) if reference is not None else []))
    fig = Figure(figsize=(9, 6.4))
    for k, metric in enumerate(METRICS):
        ax = fig.add_subplot(2, 2, k + 1)
        for method in methods:
            g = traj[traj["method"] == method]
            for _, curve in g.groupby(["subject_id", "model_id", "fold", "seed"], dropna=False):
                ax.plot(curve["step"], curve[metric], color=colors[method], lw=0.6, alpha=0.35)
            mean = g.groupby("step")[metric].mean()
            ax.plot(mean.index, mean.to_numpy(float), color=colors[method], lw=2.2, marker="o", ms=3,
                    label=f"{method} (mean)")
        if reference is not None:
            ref = reference[(reference["level"] == level) & (reference["metric"] == metric)]
            for method in _methods(ref):
                if method not in methods:
                    value = ref.loc[ref["method"] == method, "mean"].astype(float).mean()
                    ax.axhline(value, color=colors[method], ls="--", lw=1.2, label=f"{method} (final)")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("adaptation step")
        ax.set_ylabel(METRIC_NAMES[metric])
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Adaptation trajectories per target subject ({level} level)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def au_heatmap(activations: pd.DataFrame, au_names: Sequence[str], path: str, sample_id: str,
               window_start: int | None = None, window_len: int | None = None,
               method: str | None = None, model_id: str | None = None) -> str:
    """Per-frame AU activations of one sample's evaluation clip (AUs down, clip positions
    across), the selected window of ``window_len`` positions from ``window_start`` outlined."""
    rows = activations[activations["sample_id"] == sample_id]
    if method is not None:
        rows = rows[rows["method"] == method]
    if model_id is not None:
        rows = rows[rows["model_id"] == model_id]
    if rows.empty:
        raise ValueError(f"no AU activations of sample {sample_id!r} (method {method!r}, model {model_id!r})")
    runs = rows[["method", "model_id"]].astype(str).drop_duplicates()
    if len(runs) > 1:
        raise ValueError(f"sample {sample_id!r} has AU activations of {len(runs)} (method, model) pairs "
                         f"{runs.values.tolist()}: choose one with method= and model_id=")
    rows = rows.sort_values("clip_pos")
    grid = np.stack([np.asarray(a, dtype=np.float64) for a in rows["activations"]], axis=1)
    if grid.shape[0] != len(au_names):
        raise ValueError(f"{grid.shape[0]} activations per frame but {len(au_names)} AU names")
    k, t = grid.shape
    fig = Figure(figsize=(max(6.0, 0.32 * t + 4.5), 0.2 * k + 1.6))
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(k), au_names, fontsize=7)
    ax.set_xticks(range(t), [f"{p}\n({f})" for p, f in zip(rows["clip_pos"], rows["frame_index"])], fontsize=6)
    ax.set_xlabel("clip position (face frame index)", fontsize=8)
    title = f"AU activations of {sample_id} ({rows['method'].iloc[0]}, {rows['model_id'].iloc[0]})"
    if window_start is not None and window_len is not None:
        ax.add_patch(Rectangle((window_start - 0.5, -0.5), window_len, k, fill=False, edgecolor="red", lw=2.2))
        title += f"\nselected window: positions {window_start}..{window_start + window_len - 1} (red)"
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01).set_label("activation (5 x cosine)", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def stage_statuses(stage_stats: pd.DataFrame, path: str, samples: pd.DataFrame | None = None) -> str:
    """One stacked bar per stage: its output rows per status (ok first), with what was lost
    named and counted; ``samples`` adds the final predictions' statuses as a last bar."""
    bars = [(s, as_dict(c)) for s, c in zip(stage_stats["stage"], stage_stats["status_counts"])]
    if samples is not None and len(samples):
        bars.append(("predictions", samples["status"].value_counts().to_dict()))
    if not bars:
        raise ValueError("no stage statistics to plot")
    statuses = sorted({s for _, c in bars for s in c}, key=lambda s: (s != "ok", s))
    lost_colors = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    palette = {s: lost_colors[i % len(lost_colors)] for i, s in enumerate(s for s in statuses if s != "ok")}
    fig = Figure(figsize=(8.5, 0.9 * len(bars) + 1.2))
    axes = fig.subplots(len(bars), 1, squeeze=False)[:, 0]
    handles = {}
    for ax, (stage, counts) in zip(axes, bars):
        total, left = sum(counts.values()), 0
        for status in [s for s in statuses if s in counts]:
            n = counts[status]
            handles[status] = ax.barh(0, n, left=left, color="#4c9a2a" if status == "ok" else palette[status],
                                      edgecolor="white")
            left += n
        lost = [f"{s} {n} ({n / total:.1%})" for s, n in counts.items() if s != "ok" and n]
        ax.set_yticks([0], [f"{stage}\n({STAGE_UNITS.get(stage, 'rows')})"], fontsize=8)
        ax.set_xlim(0, max(total, 1))
        ax.tick_params(axis="x", labelsize=7)
        # left-aligned: the lost parts of the bar are at its right end
        ax.text(0.01, 0.5, f"{total} rows; lost: " + (", ".join(lost) if lost else "none"),
                transform=ax.transAxes, ha="left", va="center", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})
    fig.legend([handles[s] for s in statuses], statuses, loc="upper center", ncol=min(6, len(statuses)),
               fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.95))
    fig.suptitle("Rows per stage and status (what was lost where, and why)", fontsize=10, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)

