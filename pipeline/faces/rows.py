"""The face stage's per-frame rows as a dict of columns, before they become a table.

In: a row count, or rows plus the input batch (manifest rows, where nulls may come as None
or NaN) and a sample's position in it. Out: the ROW_COLUMNS dict of ``FaceStage.run``
(NaN / -1 / None for nulls), and the null-aware readers of the batch's optional fields.
"""

from __future__ import annotations

import math

import numpy as np


def empty_rows(n: int) -> dict[str, np.ndarray]:
    """n rows with no face yet (status ``no_face``, NaN geometry, no source frame)."""
    return {
        "frame_index": np.zeros(n, np.int32),
        "source_frame": np.full(n, -1, np.int32),
        "timestamp": np.full(n, np.nan, np.float64),
        "box": np.full((n, 4), np.nan, np.float32),
        "landmarks": np.full((n, 10), np.nan, np.float32),
        "prob": np.full(n, np.nan, np.float32),
        "status": np.full(n, "no_face", dtype=object),
        "error": np.full(n, None, dtype=object),
    }


def with_keys(out: dict[str, np.ndarray], batch: dict[str, np.ndarray], i: int) -> dict:
    """``out`` with the keys of the batch's sample ``i`` on every row (None where missing)."""
    n = len(out["frame_index"])
    for key in ("sample_id", "video_id", "subject_id", "shard_id"):
        value = batch[key][i] if key in batch and n else None
        out[key] = np.full(n, None if is_null(value) else str(value), dtype=object)
    return out


def is_null(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def opt_float(v: object) -> float | None:
    return None if is_null(v) else float(v)  # type: ignore[arg-type]


def opt_str(v: object) -> str | None:
    return None if is_null(v) else str(v)
