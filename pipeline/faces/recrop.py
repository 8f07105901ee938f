"""Crops from stored face rows, without detection: the one crop function of the stage and
its replay.

In: a frame (or a manifest row and stored faces rows: ``source_frame``, ``status``,
``box``, ``landmarks`` as arrays or Arrow-style lists with None) and a ``FacesConfig``.
Out: uint8 crops (S, S, 3); ``recrop_chunks`` yields (row positions, crops (k, S, S, 3))
``chunk_frames`` rows at a time, for rows ok/filled/carried only, so memory stays bounded however
long the sample; ``recrop`` collects them into (N, S, S, 3), zeros for the other rows. The
stage crops through ``crop_pixels`` from the float32 values it stores, so recropping with
the same config reproduces its crops exactly. Media that can no longer be opened or read
raise ``MediaError``; errors of the cropping code itself are not converted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from pipeline import io
from pipeline.faces.config import FacesConfig
from pipeline.faces.crop import crop_face, resize_square
from pipeline.faces.decode import DECODE_ERRORS, open_source

CROPPED = ("ok", "filled", "carried")  # statuses that carry a crop


class MediaError(Exception):
    """The media of stored face rows can no longer be read as the face stage read them."""


def crop_pixels(frame: np.ndarray, box: np.ndarray, landmarks: np.ndarray, media: str,
                cfg: FacesConfig) -> np.ndarray:
    """The crop of one row from its stored box and landmarks (float32, source px)."""
    if media == "faces":
        return resize_square(frame, cfg.crop_size, cfg.resample)
    marks = np.asarray(landmarks, np.float32).reshape(5, 2)
    return crop_face(frame, np.asarray(box, np.float32),
                     marks if np.isfinite(marks).all() else None,
                     cfg.crop_size, cfg.margin, cfg.align, cfg.aspect, cfg.resample)


def recrop_chunks(sample_row: dict, face_rows: dict[str, np.ndarray], cfg: FacesConfig
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Re-decode the frames named by ``face_rows['source_frame']`` from
    ``sample_row['path']`` (any URL) and crop them with the stored boxes / landmarks,
    yielding ``cfg.chunk_frames`` rows (ok/filled/carried only) at a time."""
    status = [str(v) for v in face_rows["status"]]
    boxes = as_matrix(face_rows["box"], 4)
    marks = as_matrix(face_rows["landmarks"], 10)
    frames_at = np.asarray(face_rows["source_frame"], dtype=np.int64)
    todo = np.asarray([i for i, st in enumerate(status) if st in CROPPED], dtype=np.int64)
    media, path = str(sample_row["media"]), str(sample_row["path"])
    size = cfg.crop_size
    with contextlib.ExitStack() as stack:
        try:
            local = stack.enter_context(io.local_path(path))
            source = open_source(local, media, cfg)
        except DECODE_ERRORS as err:
            raise MediaError(f"cannot open {path}: {type(err).__name__}: {err}") from err
        for lo in range(0, len(todo), cfg.chunk_frames):
            part = todo[lo: lo + cfg.chunk_frames]
            try:
                frames = source.read(frames_at[part])
            except DECODE_ERRORS as err:
                raise MediaError(f"cannot read {path}: {type(err).__name__}: {err}") from err
            crops = np.empty((len(part), size, size, 3), np.uint8)
            for j, (i, frame) in enumerate(zip(part.tolist(), frames, strict=True)):
                if isinstance(frame, str):
                    raise MediaError(f"cannot recrop row {i} of {path}: {frame}")
                crops[j] = crop_pixels(frame, boxes[i], marks[i], media, cfg)
            yield part, crops


def recrop(sample_row: dict, face_rows: dict[str, np.ndarray], cfg: FacesConfig) -> np.ndarray:
    """``recrop_chunks`` collected into (N, S, S, 3), zeros for rows not ok/filled/carried."""
    out = np.zeros((len(face_rows["status"]), cfg.crop_size, cfg.crop_size, 3), np.uint8)
    for part, crops in recrop_chunks(sample_row, face_rows, cfg):
        out[part] = crops
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
