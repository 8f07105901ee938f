"""The results tables (issue 11): scores, summaries and statistics the report is built from.

In: nothing (declarations only). Out: one versioned ``pyarrow.Schema`` per results table,
collected in ``RESULT_TABLES``. Bump a table's version whenever its columns change.

Every results table's Parquet metadata carries the run's lineage (``autt.lineage`` as JSON,
plus ``autt.run_id``, ``autt.config_hash``, ``autt.code_version``, ``autt.backbone_id``,
``autt.weights_digest``, ``autt.manifest_digest``); the model id is a column, because one
run holds several models (a fold and a seed each).

Conventions shared by the tables:
- ``level``: ``sample`` (one prediction per sample) or ``segment`` (chunks of one labelled
  segment averaged, BAH);
- the run key ``backbone_id, method, model_id, fold, seed`` (null model, fold or seed for
  methods without one) names one evaluated model;
- metrics: ``accuracy`` (the papers' WAR), ``uar`` (macro recall over the classes present
  in the subject's labels), ``f1`` (macro F1, same classes), ``auc`` (ROC-AUC of the last
  class of the class list); NaN where undefined (a subject holding one class).
"""

from __future__ import annotations

import pyarrow as pa

from schemas.tables import _table

# The metrics of every scored group, in table order.
METRICS = ("accuracy", "uar", "f1", "auc")
# Levels a group of predictions is scored at.
LEVELS = ("sample", "segment")
# Keys of the run-level lineage every results table carries in its Parquet metadata.
LINEAGE_KEYS = ("run_id", "config_hash", "code_version", "backbone_id", "weights_digest",
                "manifest_digest")

RUN_KEY = [
    pa.field("backbone_id", pa.string()),
    pa.field("method", pa.string(), nullable=False),   # one of schemas.tables.METHODS
    pa.field("model_id", pa.string()),                  # null for methods without a model
    pa.field("fold", pa.int16()),
    pa.field("seed", pa.int32()),                       # null for deterministic methods
]
SCORED = [pa.field(m, pa.float64()) for m in METRICS]
PREDICTED = [
    pa.field("probs", pa.list_(pa.float32())),          # class probabilities, class-list order
    pa.field("pred", pa.int16()),                       # predicted class index
    pa.field("pred_label", pa.string()),
    pa.field("correct", pa.bool_()),                    # null when unscored (not ok, unlabelled)
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
]
COUNTS = pa.map_(pa.string(), pa.int64())

# One row per (target sample, run key): its final prediction (step null) with the label
# joined from the manifest, right or wrong, every status included.
SAMPLES = _table("samples", 1, [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string()),
    pa.field("subject_id", pa.string()),
    pa.field("label", pa.string()),                     # null = unlabelled
    pa.field("label_index", pa.int16()),
    *RUN_KEY,
    *PREDICTED,
])

# One row per (labelled segment, run key, step): the mean of its ok chunks' probabilities.
SEGMENTS = _table("segments", 1, [
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("segment_id", pa.string(), nullable=False),
    pa.field("subject_id", pa.string()),
    pa.field("label", pa.string()),
    pa.field("label_index", pa.int16()),
    *RUN_KEY,
    pa.field("step", pa.int16()),                       # null = final
    pa.field("n_chunks", pa.int32(), nullable=False),   # chunk rows of the segment
    pa.field("n_chunks_ok", pa.int32(), nullable=False),  # chunks averaged (status ok)
    *PREDICTED,
])

# One row per (level, target subject, run key): its final predictions scored.
SUBJECT_METRICS = _table("subject_metrics", 1, [
    pa.field("level", pa.string(), nullable=False),
    pa.field("subject_id", pa.string(), nullable=False),
    *RUN_KEY,
    pa.field("n_rows", pa.int32(), nullable=False),      # prediction rows, every status
    pa.field("n_unlabelled", pa.int32(), nullable=False),  # ok rows without a label
    pa.field("n_samples", pa.int32(), nullable=False),   # scored: ok and labelled
    pa.field("n_classes", pa.int16(), nullable=False),   # classes present among the scored labels
    pa.field("status_counts", COUNTS),                   # prediction rows per status
    *SCORED,
])

# One row per (level, target subject, run key, adaptation step): the trajectory.
TRAJECTORIES = _table("trajectories", 1, [
    pa.field("level", pa.string(), nullable=False),
    pa.field("subject_id", pa.string(), nullable=False),
    *RUN_KEY,
    pa.field("step", pa.int16(), nullable=False),
    pa.field("n_samples", pa.int32(), nullable=False),
    pa.field("n_classes", pa.int16(), nullable=False),
    *SCORED,
])

# One row per (level, run key, metric): the metric over the target subjects.
METHOD_SUMMARY = _table("method_summary", 1, [
    pa.field("level", pa.string(), nullable=False),
    *RUN_KEY,
    pa.field("metric", pa.string(), nullable=False),     # one of METRICS
    pa.field("n_subjects", pa.int32(), nullable=False),  # every target subject scored, NaN ones too
    pa.field("n_subjects_used", pa.int32(), nullable=False),  # subjects with a defined value
    pa.field("mean", pa.float64()),                      # over the subjects used
    pa.field("std", pa.float64()),                       # sample std (ddof 1) over the subjects used
    pa.field("pooled", pa.float64()),                    # over all target samples together
    pa.field("n_samples_pooled", pa.int32(), nullable=False),
    pa.field("ci_low", pa.float64()),                    # bootstrap CI of the mean, subjects resampled
    pa.field("ci_high", pa.float64()),
    pa.field("ci_level", pa.float64(), nullable=False),
    pa.field("ci_method", pa.string(), nullable=False),  # scipy.stats.bootstrap method
    pa.field("ci_resamples", pa.int32(), nullable=False),
    pa.field("ci_seed", pa.int64(), nullable=False),
])

# One row per (level, backbone, method, metric): the subject means over folds and seeds.
METHOD_OVERALL = _table("method_overall", 1, [
    pa.field("level", pa.string(), nullable=False),
    pa.field("backbone_id", pa.string()),
    pa.field("method", pa.string(), nullable=False),
    pa.field("metric", pa.string(), nullable=False),
    pa.field("n_runs", pa.int32(), nullable=False),      # (model, fold, seed) runs with a defined mean
    pa.field("model_ids", pa.list_(pa.string())),
    pa.field("mean", pa.float64()),                      # mean of the runs' subject means
    pa.field("std", pa.float64()),                       # sample std (ddof 1) of those means
])

# One row per pipeline stage: its shards' statistics gathered. Version 2 added units_per_node.
STAGE_STATS = _table("stage_stats", 2, [
    pa.field("stage", pa.string(), nullable=False),
    pa.field("n_units", pa.int32(), nullable=False),     # shard executions recorded
    pa.field("rows_in", pa.int64(), nullable=False),
    pa.field("rows_out", pa.int64(), nullable=False),
    pa.field("status_counts", COUNTS),                   # output rows per status
    pa.field("seconds", pa.float64(), nullable=False),   # all phases of all units
    pa.field("seconds_per_unit", pa.float64()),
    pa.field("seconds_per_row", pa.float64()),           # per input row
    pa.field("phase_seconds", pa.map_(pa.string(), pa.float64())),
    pa.field("run_ids", pa.list_(pa.string())),
    pa.field("units_per_node", COUNTS),                  # node id -> units it ran (stats.node_id)
])

# One row per report: what was scored, and how.
RUN_SUMMARY = _table("run_summary", 1, [
    *[pa.field(k, pa.string()) for k in LINEAGE_KEYS],
    pa.field("classes", pa.list_(pa.string()), nullable=False),
    pa.field("positive_class", pa.string(), nullable=False),
    pa.field("n_manifest_samples", pa.int64(), nullable=False),
    pa.field("n_target_samples", pa.int64(), nullable=False),
    pa.field("n_labelled_target_samples", pa.int64(), nullable=False),
    pa.field("n_target_subjects", pa.int32(), nullable=False),
    pa.field("methods", pa.list_(pa.string()), nullable=False),
    pa.field("model_ids", pa.list_(pa.string()), nullable=False),
    pa.field("n_prediction_rows", pa.int64(), nullable=False),
    pa.field("n_non_target_rows", pa.int64(), nullable=False),  # predicted samples not in the target role
    pa.field("prediction_status_counts", COUNTS),
    pa.field("ci_method", pa.string(), nullable=False),
    pa.field("ci_resamples", pa.int32(), nullable=False),
    pa.field("ci_level", pa.float64(), nullable=False),
])

RESULT_TABLES: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "segments": SEGMENTS,
    "subject_metrics": SUBJECT_METRICS,
    "trajectories": TRAJECTORIES,
    "method_summary": METHOD_SUMMARY,
    "method_overall": METHOD_OVERALL,
    "stage_stats": STAGE_STATS,
    "run_summary": RUN_SUMMARY,
}
