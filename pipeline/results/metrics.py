"""Per-subject metrics with scikit-learn (method.md "Task and protocol").

In: scored rows (``join.join_labels`` or ``join.segment_rows``: ``subject_id``, the run key,
``step``, ``label_index``, ``pred``, ``probs``, ``status``) and the number of classes.
Out: the ``subject_metrics`` and ``trajectories`` tables as DataFrames, and ``score`` for
one group of predictions.

Only rows with status ok and a label are scored; the others are counted. Accuracy is the
papers' WAR; UAR and F1 are macro averages over the classes present in the group's labels
(a predicted class absent from the labels costs recall and precision of the present ones,
but is not averaged in); ROC-AUC scores the last class of the class list against the rest
with its probability. A group holding one class gets NaN for UAR, F1 and AUC (and AUC is NaN
whenever the positive class is absent or alone).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from sklearn import config_context
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from pipeline.results.join import RUN_KEY, typed_frame
from schemas.results import METRICS, SUBJECT_METRICS, TRAJECTORIES

NAN = float("nan")


def score(labels: Iterable[int], preds: Iterable[int], probs: np.ndarray | None, n_classes: int) -> dict:
    """Metrics of one group: ``n_samples``, ``n_classes`` (present in ``labels``) and
    ``accuracy``, ``uar``, ``f1``, ``auc`` (NaN where undefined). ``probs`` is [n, n_classes]."""
    y = np.asarray(list(labels), dtype=np.int64)
    p = np.asarray(list(preds), dtype=np.int64)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels and {len(p)} predictions: need one prediction per label")
    present = np.unique(y)
    out = {"n_samples": len(y), "n_classes": len(present), **dict.fromkeys(METRICS, NAN)}
    if not len(y):
        return out
    # The inputs are checked above; sklearn's per-call validation would triple the cost.
    with config_context(skip_parameter_validation=True, assume_finite=True):
        out["accuracy"] = float(accuracy_score(y, p))
        if len(present) < 2:
            return out
        _, recall, f1, _ = precision_recall_fscore_support(y, p, labels=present, average="macro",
                                                           zero_division=0)
        out["uar"], out["f1"] = float(recall), float(f1)
        positive = y == n_classes - 1
        if positive.any() and not positive.all():
            scores = np.asarray(probs, dtype=np.float64)
            if scores.shape != (len(y), n_classes):
                raise ValueError(f"probs of shape {scores.shape} for {len(y)} samples of {n_classes} classes")
            out["auc"] = float(roc_auc_score(positive, scores[:, -1]))
    return out


def score_rows(rows: pd.DataFrame, n_classes: int) -> dict:
    """``score`` over the ok, labelled rows of ``rows``."""
    scored = rows[(rows["status"] == "ok") & rows["label_index"].notna()]
    probs = np.stack(scored["probs"].tolist()) if len(scored) else None
    return score(scored["label_index"].astype(int), scored["pred"].astype(int), probs, n_classes)


def subject_metrics(rows: pd.DataFrame, n_classes: int, level: str = "sample") -> pd.DataFrame:
    """The ``subject_metrics`` table: the final rows (step null) scored per (subject, run key)."""
    final = rows[rows["step"].isna()]
    records = []
    for key, g in final.groupby(["subject_id", *RUN_KEY], dropna=False, sort=True):
        ok = g["status"] == "ok"
        records.append({
            "level": level, "subject_id": key[0], **dict(zip(RUN_KEY, key[1:])),
            "n_rows": len(g), "n_unlabelled": int((ok & g["label_index"].isna()).sum()),
            "status_counts": g["status"].value_counts().sort_index().to_dict(),
            **score_rows(g, n_classes),
        })
    return typed_frame(records, SUBJECT_METRICS)


def trajectories(rows: pd.DataFrame, n_classes: int, level: str = "sample") -> pd.DataFrame:
    """The ``trajectories`` table: rows with a step scored per (subject, run key, step)."""
    stepped = rows[rows["step"].notna()]
    records = []
    for key, g in stepped.groupby(["subject_id", *RUN_KEY, "step"], dropna=False, sort=True):
        records.append({"level": level, "subject_id": key[0], **dict(zip(RUN_KEY, key[1:6])),
                        "step": key[6], **score_rows(g, n_classes)})
    return typed_frame(records, TRAJECTORIES)
