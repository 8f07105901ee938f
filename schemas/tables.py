"""The table definitions. Bump a table's version whenever its columns change.

Status vocabularies (column ``status``):
- manifest: ok | missing | empty_file | unreadable | bad_row | unparsed | empty_window
- faces: ok | filled | carried | no_face | decode_error | detect_error | bad_frame
  (filled: a missed frame interpolated inside a track; carried: a frame that
  detect_mode='keyframe' did not detect on, its face interpolated between two agreeing
  keyframes; both have a box, landmarks and a crop and a null prob. ``carried`` is a new
  value, not a new column: faces tables version 1 written before it stay readable)
- errors: any non-ok status of any stage
- models: ok | failed
- predictions, adaptation: ok | insufficient_faces | failed
- adapt_units: ok | failed | no_clips
"""

from __future__ import annotations

import pyarrow as pa


def _table(name: str, version: int, fields: list[pa.Field]) -> pa.Schema:
    meta = {b"autt.table": name.encode(), b"autt.schema_version": str(version).encode()}
    return pa.schema(fields, metadata=meta)


KEYS = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string()),
    pa.field("subject_id", pa.string()),
]
STATUS = [pa.field("status", pa.string(), nullable=False), pa.field("error", pa.string())]

# One row per sample (a labelled span of a video, frame folder or face folder).
MANIFEST = _table("manifest", 1, [
    *KEYS,
    pa.field("label", pa.string()),             # class name, null = unlabelled
    pa.field("label_index", pa.int16()),        # position in the declared class list
    pa.field("role", pa.string()),              # source | target | null (unassigned)
    pa.field("path", pa.string()),              # absolute path or URL
    pa.field("media", pa.string()),             # video | frames | faces (pre-cropped)
    pa.field("start", pa.float64()),            # span start, null = file start
    pa.field("end", pa.float64()),              # span end, null = file end
    pa.field("time_unit", pa.string()),         # s | frame
    pa.field("num_frames", pa.int32()),         # from the probe (null if unknown)
    pa.field("fps", pa.float32()),              # average fps from the probe
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("size_bytes", pa.int64()),
    pa.field("batch", pa.int32(), nullable=False),     # ingest batch (append-only)
    pa.field("shard_id", pa.string(), nullable=False),  # fixed shard of that batch
    *STATUS,
])

# One row per sampled frame of every sample that reached the face stage.
FACES = _table("faces", 1, [
    *KEYS,
    pa.field("shard_id", pa.string(), nullable=False),
    pa.field("frame_index", pa.int32(), nullable=False),   # position in the sampled sequence
    pa.field("source_frame", pa.int32()),                   # frame number in the file / folder
    pa.field("timestamp", pa.float64()),                    # seconds, from the container
    pa.field("box", pa.list_(pa.float32(), 4)),             # x1 y1 x2 y2, source pixels
    pa.field("landmarks", pa.list_(pa.float32(), 10)),      # 5 points (x, y), source pixels
    pa.field("prob", pa.float32()),
    pa.field("crop", pa.binary()),                          # PNG bytes, only when stored
    *STATUS,
])

# One row per failed item of any stage (gathered beside each shard's output).
ERRORS = _table("errors", 1, [
    pa.field("stage", pa.string(), nullable=False),
    pa.field("shard_id", pa.string(), nullable=False),
    *KEYS,
    pa.field("frame_index", pa.int32()),
    *STATUS,
    pa.field("run_id", pa.string(), nullable=False),
])

# One row per (stage, shard) execution. Version 2 added ``node_id``: the Ray node the unit ran
# on (``ray.get_runtime_context().get_node_id()``), or ``local:<hostname>`` off Ray; rows of
# version 1 read back with it null.
STATS = _table("stats", 2, [
    pa.field("stage", pa.string(), nullable=False),
    pa.field("shard_id", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("rows_in", pa.int64(), nullable=False),
    pa.field("rows_out", pa.int64(), nullable=False),
    pa.field("status_counts", pa.map_(pa.string(), pa.int64())),
    pa.field("seconds", pa.map_(pa.string(), pa.float64())),   # per phase
    pa.field("started_at", pa.timestamp("us", tz="UTC")),
    pa.field("host", pa.string()),
    pa.field("fingerprint", pa.string(), nullable=False),
    pa.field("node_id", pa.string()),
])

# The fixed vocabulary of methods in the predictions tables.
METHODS = ("clip-au", "zero-shot", "pn-prompts", "au-probe", "clip-autt", "clip-autt-reference",
           "clip-au+windows", "tta-cap-frozen", "tpt")
# Statuses of a prediction row.
PREDICTION_STATUSES = ("ok", "insufficient_faces", "failed")

# One row per CLIP-AU model (a fold and a seed), written by its training unit.
MODELS = _table("models", 1, [
    pa.field("model_id", pa.string(), nullable=False),
    pa.field("backbone_id", pa.string(), nullable=False),
    pa.field("weights_digest", pa.string()),
    pa.field("split", pa.string(), nullable=False),          # fixed | kfold | loso
    pa.field("fold", pa.int16(), nullable=False),
    pa.field("seed", pa.int32(), nullable=False),
    pa.field("classes", pa.list_(pa.string()), nullable=False),
    pa.field("source_subjects", pa.list_(pa.string()), nullable=False),
    pa.field("val_subjects", pa.list_(pa.string())),
    pa.field("target_subjects", pa.list_(pa.string()), nullable=False),
    pa.field("n_train", pa.int32()),
    pa.field("n_val", pa.int32()),
    pa.field("best_epoch", pa.int16()),
    pa.field("val_f1", pa.float64()),
    pa.field("val_acc", pa.float64()),
    pa.field("train_seconds", pa.float64()),
    *STATUS,
])

# One row per (sample, model, method, fold, seed, step): class probabilities of a target
# sample's evaluation clip. step null = the final prediction. Labels are never copied here:
# reports join them from the manifest.
PREDICTIONS = _table("predictions", 1, [
    *KEYS,
    pa.field("unit_id", pa.string(), nullable=False),        # the unit of work that wrote it
    pa.field("model_id", pa.string()),                       # null for methods without a model
    pa.field("method", pa.string(), nullable=False),         # one of METHODS
    pa.field("fold", pa.int16()),
    pa.field("seed", pa.int32()),                            # null for deterministic methods
    pa.field("step", pa.int16()),                            # adaptation step; null = final
    pa.field("backbone_id", pa.string(), nullable=False),
    pa.field("probs", pa.list_(pa.float32())),               # softmax, in class-list order
    pa.field("pred", pa.int16()),                            # argmax class index
    pa.field("pred_label", pa.string()),
    pa.field("au_scores", pa.list_(pa.float32())),           # the clip's AU scores (5 x cosine)
    pa.field("window_start", pa.int16()),                    # selected window, where windows apply
    pa.field("n_face_frames", pa.int32()),                   # face frames in the cached sequence
    *STATUS,
])

# One row per (sample, model, clip position): per-frame AU activations of the evaluation clip.
AU_ACTIVATIONS = _table("au_activations", 1, [
    *KEYS,
    pa.field("unit_id", pa.string(), nullable=False),
    pa.field("model_id", pa.string()),
    pa.field("method", pa.string(), nullable=False),
    pa.field("clip_pos", pa.int16(), nullable=False),        # 0..T-1 within the clip
    pa.field("frame_index", pa.int32(), nullable=False),     # the faces table's frame index
    pa.field("activations", pa.list_(pa.float32()), nullable=False),  # K values, 5 x cosine
])

# Test-time adaptation (one unit per model, method, target subject and seed): the
# predictions schema, one row per target sample and step (0 = before any update, the
# final prediction again with step null), ``window_start`` the window each clip chose.
ADAPTATION = _table("adaptation", 1, list(PREDICTIONS))

# One row per adaptation unit: what it adapted and how long it took.
ADAPT_UNITS = _table("adapt_units", 1, [
    pa.field("unit_id", pa.string(), nullable=False),
    pa.field("model_id", pa.string()),
    pa.field("method", pa.string(), nullable=False),
    pa.field("subject_id", pa.string(), nullable=False),
    pa.field("fold", pa.int16()),
    pa.field("seed", pa.int32()),
    pa.field("backbone_id", pa.string(), nullable=False),
    pa.field("n_samples", pa.int32(), nullable=False),          # target samples of the subject
    pa.field("n_clips", pa.int32(), nullable=False),            # of them, clips adapted on
    pa.field("steps", pa.int16(), nullable=False),              # updates made
    pa.field("final_step", pa.int16()),                         # trajectory row of the final prediction
    pa.field("losses", pa.list_(pa.float32())),                 # objective at every step (CLIP-AUTT)
    pa.field("seconds", pa.map_(pa.string(), pa.float64())),    # setup, steps, per_step, total
    pa.field("device", pa.string()),
    *STATUS,
])

TABLES: dict[str, pa.Schema] = {
    "manifest": MANIFEST,
    "faces": FACES,
    "errors": ERRORS,
    "stats": STATS,
    "models": MODELS,
    "predictions": PREDICTIONS,
    "au_activations": AU_ACTIVATIONS,
    "adaptation": ADAPTATION,
    "adapt_units": ADAPT_UNITS,
}

EMBEDDINGS_VERSION = 1


def embeddings_schema(dim: int, dtype: str = "float16") -> pa.Schema:
    """One row per embedded face crop: keys and the raw image-tower vector together."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"embedding dtype must be float16 or float32, got {dtype!r}")
    if dim <= 0:
        raise ValueError(f"embedding dim must be positive, got {dim}")
    value = pa.float16() if dtype == "float16" else pa.float32()
    return _table("embeddings", EMBEDDINGS_VERSION, [
        *KEYS,
        pa.field("shard_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("timestamp", pa.float64()),
        pa.field("embedding", pa.list_(value, dim), nullable=False),
    ])


TEXT_FEATURES_VERSION = 1


def text_features_schema(dim: int) -> pa.Schema:
    """AU and class prompt features of one backbone, float32, raw (not normalised)."""
    if dim <= 0:
        raise ValueError(f"text feature dim must be positive, got {dim}")
    return _table("text_features", TEXT_FEATURES_VERSION, [
        pa.field("kind", pa.string(), nullable=False),     # au | class | class_neg
        pa.field("index", pa.int32(), nullable=False),     # position within its kind
        pa.field("name", pa.string(), nullable=False),     # AU phrase or class name
        pa.field("code", pa.string()),                     # FACS code (AUs), null otherwise
        pa.field("prompt", pa.string(), nullable=False),   # the full text encoded
        pa.field("feature", pa.list_(pa.float32(), dim), nullable=False),
    ])
