"""The face stage's output dict as an Arrow table of the FACES schema.

In: the dict returned by ``FaceStage.run`` (NaN / -1 / None stand for nulls) and, when
crops are stored, the PNG bytes of each row's crop by row position (``PngCrops``, a crop
sink of the stage). Out: a ``pa.Table`` with exactly ``schemas.tables.FACES``; ``crop``
holds those bytes for rows that have a face (ok/filled/carried), else null.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

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


class PngCrops(dict):
    """A crop sink of ``FaceStage.run`` keeping each crop as PNG bytes by row position."""

    def __call__(self, positions: np.ndarray, crops: np.ndarray) -> None:
        for pos, pixels in zip(positions.tolist(), crops, strict=True):
            self[pos] = _png(pixels)


def faces_table(out: dict[str, np.ndarray], crops: Mapping[int, bytes] | None = None
                ) -> pa.Table:
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
    stored = crops or {}
    cols["crop"] = pa.array([stored.get(i) if s in CROPPED else None
                             for i, s in enumerate(status)], pa.binary())
    return pa.table([cols[f.name] for f in FACES], schema=FACES)
