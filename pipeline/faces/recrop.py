"""Crops from stored face rows, without detection: the one crop function of the stage and
its replay.

In: a frame (or a manifest row and stored faces rows: ``source_frame``, ``status``,
``box``, ``landmarks`` as arrays or Arrow-style lists with None) and a ``FacesConfig``.
Out: uint8 crops (S, S, 3) / (N, S, S, 3); zeros for rows not ok/filled. The stage crops
through ``crop_pixels`` from the float32 values it stores, so ``recrop`` with the same
config reproduces its ``crop_pixels`` exactly.
"""

from __future__ import annotations

import numpy as np

from pipeline import io
from pipeline.faces.config import FacesConfig
from pipeline.faces.crop import crop_face, resize_square
from pipeline.faces.decode import open_source

CROPPED = ("ok", "filled")  # statuses that carry a crop


def crop_pixels(frame: np.ndarray, box: np.ndarray, landmarks: np.ndarray, media: str,
                cfg: FacesConfig) -> np.ndarray:
    """The crop of one row from its stored box and landmarks (float32, source px)."""
    if media == "faces":
        return resize_square(frame, cfg.crop_size)
    marks = np.asarray(landmarks, np.float32).reshape(5, 2)
    return crop_face(frame, np.asarray(box, np.float32),
                     marks if np.isfinite(marks).all() else None,
                     cfg.crop_size, cfg.margin, cfg.align, cfg.aspect)


def recrop(sample_row: dict, face_rows: dict[str, np.ndarray], cfg: FacesConfig) -> np.ndarray:
    """Re-decode the frames named by ``face_rows['source_frame']`` from
    ``sample_row['path']`` (any URL) and crop them with the stored boxes / landmarks."""
    status = [str(v) for v in face_rows["status"]]
    boxes = as_matrix(face_rows["box"], 4)
    marks = as_matrix(face_rows["landmarks"], 10)
    frames_at = np.asarray(face_rows["source_frame"], dtype=np.int64)
    out = np.zeros((len(status), cfg.crop_size, cfg.crop_size, 3), np.uint8)
    todo = [i for i, st in enumerate(status) if st in CROPPED]
    media = str(sample_row["media"])
    with io.local_path(str(sample_row["path"])) as local:
        source = open_source(local, media, cfg)
        for lo in range(0, len(todo), cfg.chunk_frames):
            part = todo[lo: lo + cfg.chunk_frames]
            for i, frame in zip(part, source.read(frames_at[part]), strict=True):
                if isinstance(frame, str):
                    raise ValueError(f"cannot recrop row {i} of {sample_row['path']}: {frame}")
                out[i] = crop_pixels(frame, boxes[i], marks[i], media, cfg)
    return out


def as_matrix(column: object, width: int) -> np.ndarray:
    """(N, width) float32 from a 2-D array or a sequence of sequences / None (NaN rows)."""
    if isinstance(column, np.ndarray) and column.dtype != object and column.ndim == 2:
        return column.astype(np.float32)
    items = list(column)  # type: ignore[call-overload]
    out = np.full((len(items), width), np.nan, np.float32)
    for i, v in enumerate(items):
        if v is not None:
            out[i] = np.asarray(v, np.float32).reshape(width)
    return out
