"""Stage statistics and the run summary.

In: the ``stats`` rows every stage writes beside its shards (``schemas.tables.STATS``), and,
for the summary, the manifest, the raw prediction rows, the class list, the lineage and the
bootstrap settings. Out: the ``stage_stats`` table (per stage: rows in and out, counts per
status, seconds in all and per unit and per input row, seconds per phase, units per node) and
the one-row ``run_summary`` table.

A shard executed more than once (a rerun with ``--recompute``, a retry) counts once, with its
latest execution (``started_at``; the last row where that is missing): a retry rewrites the
whole shard, so its latest row describes what the workspace holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import pandas as pd
import pyarrow as pa

from pipeline.results.join import as_frame, check_classes, typed_frame
from pipeline.results.summary import DEFAULT_BOOTSTRAP, BootstrapConfig
from schemas.results import LINEAGE_KEYS, RUN_SUMMARY, STAGE_STATS

# Pipeline order of the stages this project writes; others follow alphabetically.
STAGE_ORDER = ("ingest", "faces", "embed", "faces+embed", "text_features", "train", "predict", "adapt")
STATS_COLUMNS = ("stage", "shard_id", "run_id", "rows_in", "rows_out", "status_counts", "seconds")


def as_dict(value) -> dict:
    """A map cell as a dict: pyarrow gives a list of (key, value) pairs, callers may pass a dict."""
    if value is None or (not isinstance(value, (Mapping, list, tuple)) and pd.isna(value)):
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {k: v for k, v in value}


def _stage_rank(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage), "") if stage in STAGE_ORDER else (len(STAGE_ORDER), stage)


def stage_stats(stats: pd.DataFrame | pa.Table) -> pd.DataFrame:
    """The ``stage_stats`` table from the stages' ``stats`` rows (latest execution per shard)."""
    frame = as_frame(stats, "stats", STATS_COLUMNS)
    frame["_order"] = range(len(frame))
    sort = ["started_at", "_order"] if "started_at" in frame.columns else ["_order"]
    latest = frame.sort_values(sort, na_position="first", kind="stable").groupby(
        ["stage", "shard_id"], sort=False).tail(1)
    records = []
    for stage in sorted(latest["stage"].unique(), key=_stage_rank):
        g = latest[latest["stage"] == stage]
        counts: Counter = Counter()
        phases: Counter = Counter()
        for c, s in zip(g["status_counts"], g["seconds"]):
            counts.update({k: int(v) for k, v in as_dict(c).items()})
            phases.update({k: float(v) for k, v in as_dict(s).items()})
        seconds = float(sum(phases.values()))
        rows_in = int(g["rows_in"].sum())
        records.append({
            "stage": stage, "n_units": len(g), "rows_in": rows_in, "rows_out": int(g["rows_out"].sum()),
            "status_counts": dict(sorted(counts.items())), "seconds": seconds,
            "seconds_per_unit": seconds / len(g), "seconds_per_row": seconds / rows_in if rows_in else None,
            "phase_seconds": dict(sorted(phases.items())), "run_ids": sorted(g["run_id"].dropna().unique()),
            "units_per_node": _units_per_node(g),
        })
    return typed_frame(records, STAGE_STATS)


def _units_per_node(g: pd.DataFrame) -> dict[str, int]:
    """Units per node id (rows written before node ids were recorded count under "unknown")."""
    nodes = g["node_id"] if "node_id" in g.columns else pd.Series([None] * len(g), dtype=object)
    return dict(sorted(Counter(str(n) if pd.notna(n) else "unknown" for n in nodes).items()))


def check_lineage(lineage: Mapping[str, str | None]) -> dict[str, str | None]:
    """``lineage`` as a dict, after checking it names every key of ``LINEAGE_KEYS`` (values:
    strings, or None where unknown, e.g. the weights digest of a random-init backbone)."""
    if not isinstance(lineage, Mapping):
        raise TypeError(f"lineage must be a mapping of {LINEAGE_KEYS}, got {type(lineage).__name__}")
    missing = [k for k in LINEAGE_KEYS if k not in lineage]
    if missing:
        raise ValueError(f"lineage lacks {missing}; every results table records {list(LINEAGE_KEYS)}")
    bad = {k: v for k, v in lineage.items() if v is not None and not isinstance(v, str)}
    if bad:
        raise ValueError(f"lineage values must be strings or None, got {bad}")
    return dict(lineage)


def run_summary(manifest: pd.DataFrame | pa.Table, predictions: pd.DataFrame | pa.Table,
                classes: Sequence[str], lineage: Mapping[str, str | None],
                cfg: BootstrapConfig = DEFAULT_BOOTSTRAP, n_non_target_rows: int = 0) -> pd.DataFrame:
    """The one-row ``run_summary`` table: what the report scored, and how
    (``n_non_target_rows``: the prediction rows ``join_labels`` left out)."""
    classes = check_classes(classes)
    lineage = check_lineage(lineage)
    man = as_frame(manifest, "manifest", ("sample_id", "subject_id", "label", "role"))
    preds = as_frame(predictions, "predictions", ("model_id", "method", "status"))
    target = man[man["role"] == "target"]
    record = {
        **{k: lineage[k] for k in LINEAGE_KEYS},
        "classes": classes, "positive_class": classes[-1],
        "n_manifest_samples": len(man), "n_target_samples": len(target),
        "n_labelled_target_samples": int(target["label"].notna().sum()),
        "n_target_subjects": int(target["subject_id"].nunique()),
        "methods": sorted(preds["method"].unique()),
        "model_ids": sorted(str(m) for m in preds["model_id"].dropna().unique()),
        "n_prediction_rows": len(preds), "n_non_target_rows": n_non_target_rows,
        "prediction_status_counts": preds["status"].value_counts().sort_index().to_dict(),
        "ci_method": cfg.method, "ci_resamples": cfg.n_resamples, "ci_level": cfg.level,
    }
    return typed_frame([record], RUN_SUMMARY)
