"""Every results table from the pipeline's outputs, typed to its schema and written.

In: manifest rows, prediction rows, the ordered class list, the run's lineage, and
optionally the stages' ``stats`` rows and a sample -> segment mapping (BAH), as pandas
DataFrames or pyarrow Tables (the caller reads them from the workspace). Out: a dict of
DataFrames keyed by table name (``build_tables``), each convertible to a pyarrow Table of
its ``schemas.results`` schema carrying the lineage in its metadata (``to_arrow``), and
Parquet files ``<name>.parquet`` in a local folder (``write_tables``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline import parquet
from pipeline.results import join, metrics, stats, summary
from pipeline.results.summary import DEFAULT_BOOTSTRAP, BootstrapConfig
from schemas import check
from schemas.results import RESULT_TABLES


def build_tables(manifest: pd.DataFrame | pa.Table, predictions: pd.DataFrame | pa.Table,
                 classes: Sequence[str], lineage: Mapping[str, str | None], *,
                 stage_stats: pd.DataFrame | pa.Table | None = None,
                 segments: pd.DataFrame | pa.Table | None = None,
                 bootstrap: BootstrapConfig = DEFAULT_BOOTSTRAP) -> dict[str, pd.DataFrame]:
    """All results tables. ``segments`` (columns ``sample_id, segment_id``) adds the
    ``segments`` table and ``segment``-level rows to the metric tables; ``stage_stats`` (the
    stages' ``stats`` rows) adds the ``stage_stats`` table."""
    classes = join.check_classes(classes)
    stats.check_lineage(lineage)
    n = len(classes)
    rows, n_left_out = join.join_labels(predictions, manifest, classes)
    levels = [("sample", rows)]
    tables: dict[str, pd.DataFrame] = {"samples": join.samples_table(rows)}
    if segments is not None:
        tables["segments"] = join.segment_rows(rows, segments, classes)
        levels.append(("segment", tables["segments"]))
    per_subject, per_step, per_run = [], [], []
    for level, level_rows in levels:
        subjects = metrics.subject_metrics(level_rows, n, level)
        per_subject.append(subjects)
        per_step.append(metrics.trajectories(level_rows, n, level))
        per_run.append(summary.method_summary(subjects, level_rows, n, bootstrap))
    tables["subject_metrics"] = pd.concat(per_subject, ignore_index=True)
    tables["trajectories"] = pd.concat(per_step, ignore_index=True)
    tables["method_summary"] = pd.concat(per_run, ignore_index=True)
    tables["method_overall"] = summary.method_overall(tables["method_summary"])
    if stage_stats is not None:
        tables["stage_stats"] = stats.stage_stats(stage_stats)
    tables["run_summary"] = stats.run_summary(manifest, predictions, classes, lineage, bootstrap,
                                              n_non_target_rows=n_left_out)
    return tables


def _missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and bool(np.isnan(value))


def _cell(value, t: pa.DataType, column: str):
    if _missing(value):
        return None
    if pa.types.is_map(t):
        return sorted(stats.as_dict(value).items())
    if pa.types.is_list(t):
        return [None if _missing(v) else v for v in np.asarray(value, dtype=object).tolist()]
    if pa.types.is_integer(t):
        if isinstance(value, (float, np.floating)) and not float(value).is_integer():
            raise ValueError(f"column {column!r}: {value!r} is not a whole number")
        return int(value)
    if pa.types.is_floating(t):
        return float(value)
    if pa.types.is_boolean(t):
        return bool(value)
    return value


def to_arrow(frame: pd.DataFrame, name: str, lineage: Mapping[str, str | None]) -> pa.Table:
    """``frame`` as a pyarrow Table of results table ``name``'s schema (NaN and NA as null),
    its metadata carrying ``lineage``; raises, naming the column, on anything that does not fit."""
    if name not in RESULT_TABLES:
        raise KeyError(f"unknown results table {name!r}; known: {sorted(RESULT_TABLES)}")
    lineage = stats.check_lineage(lineage)
    schema = RESULT_TABLES[name]
    if list(frame.columns) != schema.names:
        raise ValueError(f"{name}: columns {list(frame.columns)} != declared {schema.names}")
    arrays = []
    for field in schema:
        values = [_cell(v, field.type, field.name) for v in frame[field.name].tolist()]
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise ValueError(f"{name}: column {field.name!r} does not fit {field.type}: {exc}") from exc
    table = pa.Table.from_arrays(arrays, schema=schema)
    check(table, schema)
    meta = {k: v for k, v in lineage.items() if v is not None}
    return parquet.with_run_metadata(table, **meta, lineage=json.dumps(lineage, sort_keys=True))


def write_tables(tables: Mapping[str, pd.DataFrame], folder: str,
                 lineage: Mapping[str, str | None]) -> dict[str, str]:
    """Write each table as ``<folder>/<name>.parquet`` (atomically); returns name -> path."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name, frame in tables.items():
        path = os.path.join(folder, f"{name}.parquet")
        parquet.write(path, to_arrow(frame, name, lineage))
        paths[name] = path
    return paths


def read_lineage(path: str) -> dict[str, str | None]:
    """The lineage recorded in a results table's Parquet metadata."""
    meta = parquet.metadata(path)
    if "autt.lineage" not in meta:
        raise ValueError(f"{path} carries no autt.lineage metadata: not a results table")
    return json.loads(meta["autt.lineage"])
