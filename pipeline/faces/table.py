"""The face stage's output dict as an Arrow table of the FACES schema.

In: the dict returned by ``FaceStage.__call__`` (NaN / -1 / None stand for nulls).
Out: a ``pa.Table`` with exactly ``schemas.tables.FACES``; ``crop`` holds PNG bytes of
``crop_pixels`` for rows that have a crop when ``store_crops`` is set, else null.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.faces.recrop import CROPPED
from schemas.tables import FACES


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _vectors(values: np.ndarray, width: int) -> pa.Array:
    flat = np.asarray(values, np.float32).reshape(-1, width)
    missing = ~np.isfinite(flat).all(axis=1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), pa.float32()), width,
                                             mask=pa.array(missing))


def faces_table(out: dict[str, np.ndarray], store_crops: bool = False) -> pa.Table:
    """Convert one stage output to the FACES table (nulls where the dict has NaN / -1)."""
    status = [str(s) for s in out["status"]]
    cols: dict[str, pa.Array] = {}
    for name in ("sample_id", "video_id", "subject_id", "shard_id", "error"):
        cols[name] = pa.array(list(out[name]), FACES.field(name).type)
    cols["status"] = pa.array(status, pa.string())
    cols["frame_index"] = pa.array(np.asarray(out["frame_index"], np.int32))
    source = np.asarray(out["source_frame"], np.int32)
    cols["source_frame"] = pa.array(source, pa.int32(), mask=source < 0)
    for name, kind in (("timestamp", pa.float64()), ("prob", pa.float32())):
        values = np.asarray(out[name])
        cols[name] = pa.array(values, kind, mask=~np.isfinite(values))
    cols["box"] = _vectors(out["box"], 4)
    cols["landmarks"] = _vectors(out["landmarks"], 10)
    crops = [None] * len(status)
    if store_crops:
        crops = [_png(c) if s in CROPPED else None
                 for c, s in zip(out["crop_pixels"], status, strict=True)]
    cols["crop"] = pa.array(crops, pa.binary())
    return pa.table([cols[f.name] for f in FACES], schema=FACES)
