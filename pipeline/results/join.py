"""Labels joined to predictions: the one place where target labels meet model outputs.

In: prediction rows (``schemas.tables.PREDICTIONS`` columns), manifest rows
(``schemas.tables.MANIFEST`` columns) and the ordered class list, as pandas DataFrames or
pyarrow Tables. Out: a "scored rows" DataFrame, one row per prediction of a target sample
(every step, every status) with the manifest's label, its class index and whether the
prediction is right; from it the ``samples`` table (final predictions) and, given a
sample -> segment mapping, the ``segments`` table (chunks of one labelled segment averaged).

Column types inside: ``fold``, ``seed``, ``step``, ``label_index`` and ``pred`` are pandas
nullable ``Int64``; ``probs`` holds float64 numpy arrays (None where a row has none).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from schemas.results import SAMPLES, SEGMENTS
from schemas.tables import METHODS, PREDICTION_STATUSES

# The run key: one evaluated model of one method.
RUN_KEY = ["backbone_id", "method", "model_id", "fold", "seed"]
INT_COLUMNS = ("fold", "seed", "step", "label_index", "pred")
PRED_COLUMNS = ("sample_id", "video_id", "subject_id", *RUN_KEY, "step", "probs", "pred", "status")
MANIFEST_COLUMNS = ("sample_id", "video_id", "subject_id", "label", "role")


def as_frame(data: pd.DataFrame | pa.Table, what: str, required: Sequence[str] = ()) -> pd.DataFrame:
    """A DataFrame copy of ``data`` that has the ``required`` columns (named when missing)."""
    if isinstance(data, pa.Table):
        data = data.to_pandas()
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame or a pyarrow Table, got {type(data).__name__}")
    missing = [c for c in required if c not in data.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {missing}; it has {list(data.columns)}")
    return data.copy()


def check_classes(classes: Sequence[str]) -> list[str]:
    classes = list(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"the class list must hold at least 2 distinct names, got {classes!r}")
    return classes


def _ints(series: pd.Series, name: str) -> pd.Series:
    try:
        return series.astype("Int64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {name!r} must hold whole numbers or nulls: {exc}") from exc


def _probs(value, n_classes: int, sample_id: str) -> np.ndarray | None:
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n_classes,) or not np.isfinite(arr).all():
        raise ValueError(f"sample {sample_id!r}: probs {arr.tolist()} must be {n_classes} finite values, "
                         "one per class of the class list")
    return arr


def join_labels(predictions: pd.DataFrame | pa.Table, manifest: pd.DataFrame | pa.Table,
                classes: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Prediction rows of target samples with their labels joined.

    Returns the scored rows (columns of ``samples`` plus ``step``) and the number of
    prediction rows left out because the manifest does not make their sample a target.
    Raises, naming the value, on a sample missing from the manifest, a subject that differs
    from the manifest's, a method or status outside the vocabulary, a label outside the class
    list, probabilities of the wrong length, a predicted index out of range, or a repeated
    prediction key.
    """
    classes = check_classes(classes)
    preds = as_frame(predictions, "predictions", PRED_COLUMNS)
    man = as_frame(manifest, "manifest", MANIFEST_COLUMNS)
    repeated = man["sample_id"][man["sample_id"].duplicated()]
    if len(repeated):
        raise ValueError(f"manifest repeats sample_id {repeated.iloc[0]!r}")
    bad_method = sorted(set(preds["method"]) - set(METHODS))
    if bad_method:
        raise ValueError(f"unknown method(s) {bad_method} in predictions; known: {list(METHODS)}")
    bad_status = sorted(set(preds["status"]) - set(PREDICTION_STATUSES))
    if bad_status:
        raise ValueError(f"unknown prediction status(es) {bad_status}; known: {list(PREDICTION_STATUSES)}")
    bad_label = sorted(set(man["label"].dropna()) - set(classes))
    if bad_label:
        raise ValueError(f"manifest label(s) {bad_label} are not in the class list {classes}")
    for name in ("fold", "seed", "step", "pred"):
        preds[name] = _ints(preds[name], name)

    man = man[["sample_id", "video_id", "subject_id", "label", "role"]].rename(
        columns={"video_id": "m_video_id", "subject_id": "m_subject_id"})
    rows = preds.merge(man, on="sample_id", how="left", validate="many_to_one", indicator=True)
    unknown = rows.loc[rows["_merge"] == "left_only", "sample_id"].unique()
    if len(unknown):
        raise ValueError(f"{len(unknown)} predicted sample(s) are not in the manifest, e.g. {unknown[0]!r}")
    differs = rows["subject_id"].notna() & (rows["subject_id"] != rows["m_subject_id"])
    if differs.any():
        r = rows[differs].iloc[0]
        raise ValueError(f"sample {r['sample_id']!r}: predictions say subject {r['subject_id']!r}, the "
                         f"manifest says {r['m_subject_id']!r}")
    target = rows["role"] == "target"
    n_left_out = int((~target).sum())
    rows = rows[target].copy()
    rows["subject_id"] = rows["m_subject_id"]
    rows["video_id"] = rows["m_video_id"]

    key = ["sample_id", *RUN_KEY, "step"]
    repeated = rows.duplicated(key, keep=False)
    if repeated.any():
        r = rows[repeated].iloc[0]
        raise ValueError(f"prediction key repeated: {dict((k, r[k]) for k in key)}")
    n = len(classes)
    rows["probs"] = [_probs(p, n, s) for p, s in zip(rows["probs"], rows["sample_id"])]
    ok = rows["status"] == "ok"
    bad = ok & (rows["pred"].isna() | (rows["pred"] < 0) | (rows["pred"] >= n)
                | rows["probs"].map(lambda p: p is None))
    if bad.any():
        r = rows[bad].iloc[0]
        raise ValueError(f"sample {r['sample_id']!r} ({r['method']}): an ok prediction needs probs and a "
                         f"pred in 0..{n - 1}, got pred {r['pred']!r}")
    rows["label_index"] = _ints(rows["label"].map({c: i for i, c in enumerate(classes)}), "label_index")
    rows["pred_label"] = rows["pred"].map(lambda i: classes[i] if not pd.isna(i) else None)
    scored = ok & rows["label_index"].notna()
    rows["correct"] = pd.array([bool(p == y) if s else None for p, y, s in
                                zip(rows["pred"], rows["label_index"], scored)], dtype="boolean")
    if "error" not in rows.columns:
        rows["error"] = None
    cols = [f.name for f in SAMPLES] + ["step"]
    return rows[cols].sort_values(key, na_position="first", kind="stable").reset_index(drop=True), n_left_out


def samples_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The ``samples`` table: the final predictions (step null) of the scored rows."""
    final = rows[rows["step"].isna()]
    return final[[f.name for f in SAMPLES]].reset_index(drop=True)


def typed_frame(records: list[dict], schema: pa.Schema) -> pd.DataFrame:
    """A DataFrame of ``records`` with ``schema``'s columns, integer keys as nullable Int64."""
    frame = pd.DataFrame(records, columns=schema.names)
    for name in INT_COLUMNS:
        if name in frame.columns:
            frame[name] = _ints(frame[name], name)
    return frame


def segment_rows(rows: pd.DataFrame, mapping: pd.DataFrame | pa.Table, classes: Sequence[str]) -> pd.DataFrame:
    """The ``segments`` table: per (video_id, segment_id, run key, step), the mean of its ok
    chunks' probabilities and the argmax of that mean.

    ``mapping`` has columns ``sample_id, segment_id`` (one row per chunk sample; the segment's
    video is the manifest's ``video_id`` of its chunks). Every chunk of a segment must carry the
    same label; a scored row's sample missing from the mapping is an error.
    """
    classes = check_classes(classes)
    mapping = as_frame(mapping, "segment mapping", ("sample_id", "segment_id"))
    repeated = mapping["sample_id"][mapping["sample_id"].duplicated()]
    if len(repeated):
        raise ValueError(f"segment mapping lists sample {repeated.iloc[0]!r} twice; a chunk has one segment")
    data = rows.merge(mapping[["sample_id", "segment_id"]].astype({"segment_id": str}), on="sample_id",
                      how="left")
    if data["segment_id"].isna().any():
        raise ValueError(f"sample {data.loc[data['segment_id'].isna(), 'sample_id'].iloc[0]!r} has no segment "
                         "in the segment mapping")
    # One vectorised groupby (a BAH run holds many thousands of segments x runs x steps).
    n = len(classes)
    ok = (data["status"] == "ok").to_numpy()
    probs = np.full((len(data), n), np.nan)
    if ok.any():
        probs[ok] = np.stack(data.loc[ok, "probs"].tolist())
    cols = [f"_p{i}" for i in range(n)]
    data = data.assign(_ok=ok, _unlabelled=data["label"].isna(), **dict(zip(cols, probs.T)))
    keys = ["video_id", "segment_id", *RUN_KEY, "step"]
    agg = data.groupby(keys, dropna=False, sort=True).agg(
        subject_id=("subject_id", "first"), label=("label", "first"), n_labels=("label", "nunique"),
        n_unlabelled=("_unlabelled", "sum"), n_chunks=("status", "size"), n_chunks_ok=("_ok", "sum"),
        first_status=("status", "first"), n_statuses=("status", "nunique"),
        **{c: (c, "mean") for c in cols}).reset_index()
    mixed = (agg["n_labels"] > 1) | ((agg["n_labels"] == 1) & (agg["n_unlabelled"] > 0))
    if mixed.any():
        r = agg[mixed].iloc[0]
        chunks = data[(data["video_id"] == r["video_id"]) & (data["segment_id"] == r["segment_id"])]
        raise ValueError(f"segment {r['segment_id']!r} of video {r['video_id']!r} mixes labels "
                         f"{chunks['label'].unique().tolist()}")
    mean = agg[cols].to_numpy(dtype=np.float64)
    scored = agg["n_chunks_ok"].to_numpy() > 0
    agg["probs"] = [m if s else None for m, s in zip(mean, scored)]
    pred = np.argmax(np.nan_to_num(mean, nan=-1.0), axis=1)
    agg["pred"] = pd.array([int(p) if s else None for p, s in zip(pred, scored)], dtype="Int64")
    agg["label_index"] = agg["label"].map({c: i for i, c in enumerate(classes)})
    agg["pred_label"] = agg["pred"].map(lambda i: classes[i] if not pd.isna(i) else None)
    agg["correct"] = [bool(p == y) if not (pd.isna(p) or pd.isna(y)) else None
                      for p, y in zip(agg["pred"], agg["label_index"])]
    agg["status"] = np.where(scored, "ok", np.where(agg["n_statuses"] == 1, agg["first_status"], "failed"))
    agg["error"] = [None if s else f"none of its {c} chunk(s) has an ok prediction"
                    for s, c in zip(scored, agg["n_chunks"])]
    frame = typed_frame(agg[SEGMENTS.names].to_dict("records"), SEGMENTS)
    frame["correct"] = frame["correct"].astype("boolean")
    return frame
