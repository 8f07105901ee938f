"""The face stage: manifest rows in, one row per sampled frame out, with the tracked face's
box, landmarks and square crop.

In: a batch dict of MANIFEST column arrays (``sample_id``, ``video_id``, ``subject_id``,
``path``, ``media``, ``start``, ``end``, ``time_unit``, ``shard_id``; others ignored).
Out: a dict with the FACES columns except ``crop`` plus ``crop_pixels`` uint8
(N, S, S, 3), zeros where status is not ok/filled. Nulls: NaN in ``timestamp``, ``prob``,
``box`` (N, 4) and ``landmarks`` (N, 10); -1 in ``source_frame``; None in ``error``.
Rows follow the input samples in order, then ``frame_index``. A sample that cannot be
opened gives one ``decode_error`` row (frame_index -1); an undecodable frame a
``bad_frame`` row. Media 'faces' (pre-cropped face images) skip detection.
Detection runs on equal-size frames pooled across the batch's samples; crops come from
frames kept in memory up to ``cache_mb`` per batch, else from re-decoding, through the
same ``crop_pixels`` call that ``recrop`` uses.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline import faults, io
from pipeline.faces import track as tracking
from pipeline.faces.config import FacesConfig
from pipeline.faces.crop import resize_square
from pipeline.faces.decode import DECODE_ERRORS, FrameSource, open_source, sample_indices
from pipeline.faces.detect import FaceDetector, FrameFaces, detect_shape, downscale, resolve_device
from pipeline.faces.recrop import CROPPED, crop_pixels, recrop
from schemas.tables import FACES

__all__ = ["OUTPUT_COLUMNS", "FaceStage", "recrop"]

OUTPUT_COLUMNS = tuple(f.name for f in FACES if f.name != "crop") + ("crop_pixels",)
_STATE_NAMES = {tracking.NONE: "no_face", tracking.OK: "ok", tracking.FILLED: "filled"}
_Pending = dict[tuple[int, int], list[tuple["_Sample", int, torch.Tensor]]]


@dataclass
class _Sample:
    row: int
    media: str
    source: FrameSource | None = None
    error: str | None = None
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    frame_errors: dict[int, str] = field(default_factory=dict)  # position -> message
    shapes: dict[int, tuple[int, int]] = field(default_factory=dict)  # position -> (h, w)
    dets: dict[int, FrameFaces] = field(default_factory=dict)
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # full frames kept for crops
    crops: dict[int, np.ndarray] = field(default_factory=dict)  # media 'faces' only


class FaceStage:
    """Decode -> detect -> track -> crop over a batch of manifest rows."""

    def __init__(self, cfg: FacesConfig, num_threads: int | None = None) -> None:
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.cfg = cfg
        self.num_threads = num_threads
        self._set_threads()
        self.device = resolve_device(cfg.device)
        self.detector = FaceDetector(cfg, self.device)
        self.seconds: dict[str, float] = defaultdict(float)  # per phase, summed over calls
        # False when nobody needs the pixels (faces alone, crops not stored): no crop work,
        # and ``crop_pixels`` comes back as (N, 0, 0, 3).
        self.make_crops = True

    def _set_threads(self) -> None:
        # Ray may call from another thread than __init__, where torch runs single-threaded
        if self.num_threads is not None and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)

    def detect_frames(self, frames: list[np.ndarray]) -> list[FrameFaces]:
        """Detection alone on full RGB frames (benchmarks, checks)."""
        self._set_threads()
        return self.detector.detect(frames)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._set_threads()
        n = len(batch["sample_id"])
        pending: _Pending = {}
        budget = [self.cfg.cache_mb * 2**20]
        with contextlib.ExitStack() as stack:  # remote media stay copied until cropped
            samples = []
            for i in range(n):
                if i == n // 2:
                    faults.maybe_fail("mid_shard", str(batch["shard_id"][i]))
                sample = self._open(batch, i, stack)
                if sample.source is not None:
                    self._decode(sample, sample.source, pending, budget)
                samples.append(sample)
            for src_hw in list(pending):
                self._flush(pending, src_hw)
            parts = [self._rows(batch, s) for s in samples]
        if not parts:
            parts = [_with_keys(_empty_rows(0, self.cfg.crop_size), batch, 0)]
        return {c: np.concatenate([p[c] for p in parts]) for c in OUTPUT_COLUMNS}

    def _open(self, batch: dict[str, np.ndarray], i: int, stack: contextlib.ExitStack) -> _Sample:
        t0 = time.perf_counter()
        sample = _Sample(row=i, media=str(batch["media"][i]))
        try:
            local = stack.enter_context(io.local_path(str(batch["path"][i])))
            sample.source = open_source(local, sample.media, self.cfg, self.num_threads or 0)
            unit = _opt_str(batch["time_unit"][i]) or "s"
            start, end = _opt_float(batch["start"][i]), _opt_float(batch["end"][i])
            sample.indices = sample_indices(sample.source.timestamps, start, end, unit, self.cfg)
            if len(sample.indices) == 0:
                raise ValueError(f"window [{start}, {end}] {unit} holds none of the "
                                 f"{len(sample.source)} frames")
        except DECODE_ERRORS as err:
            sample.source = None
            sample.error = f"{type(err).__name__}: {str(err).strip()}"
        self.seconds["decode"] += time.perf_counter() - t0
        return sample

    def _decode(self, s: _Sample, source: FrameSource, pending: _Pending,
                budget: list[int]) -> None:
        """Read the sample's frames a chunk at a time and queue downscaled copies for
        detection (pre-cropped faces are resized at once instead)."""
        for lo in range(0, len(s.indices), self.cfg.chunk_frames):
            t0 = time.perf_counter()
            frames = source.read(s.indices[lo: lo + self.cfg.chunk_frames])
            by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
            for pos, frame in enumerate(frames, start=lo):
                if isinstance(frame, str):
                    s.frame_errors[pos] = frame
                    continue
                s.shapes[pos] = (int(frame.shape[0]), int(frame.shape[1]))
                by_shape[s.shapes[pos]].append(pos)
                if s.media == "faces":
                    s.crops[pos] = resize_square(frame, self.cfg.crop_size)
                elif frame.nbytes <= budget[0]:
                    s.frames[pos] = frame
                    budget[0] -= frame.nbytes
            self.seconds["decode"] += time.perf_counter() - t0
            if s.media == "faces":
                continue
            for src_hw, members in by_shape.items():
                t0 = time.perf_counter()
                shape = detect_shape(*src_hw, self.cfg.detect_size)
                small = downscale(np.stack([frames[p - lo] for p in members]), shape, self.device)
                self.seconds["detect"] += time.perf_counter() - t0
                queue = pending.setdefault(src_hw, [])
                queue.extend((s, p, small[j]) for j, p in enumerate(members))
                if len(queue) >= self.cfg.detect_batch:
                    self._flush(pending, src_hw)

    def _flush(self, pending: _Pending, src_hw: tuple[int, int]) -> None:
        queue = pending.pop(src_hw, [])
        if not queue:
            return
        t0 = time.perf_counter()
        found = self.detector.detect_small(torch.stack([q[2] for q in queue]), src_hw)
        for (sample, pos, _), faces in zip(queue, found, strict=True):
            sample.dets[pos] = faces
        self.seconds["detect"] += time.perf_counter() - t0

    def _rows(self, batch: dict[str, np.ndarray], s: _Sample) -> dict[str, np.ndarray]:
        if s.source is None:
            out = _empty_rows(1, self.cfg.crop_size if self.make_crops else 0)
            out["frame_index"][0] = -1
            out["status"][0], out["error"][0] = "decode_error", s.error
            return _with_keys(out, batch, s.row)
        n = len(s.indices)
        out = _empty_rows(n, self.cfg.crop_size if self.make_crops else 0)
        out["frame_index"][:] = np.arange(n)
        out["source_frame"][:] = s.indices
        out["timestamp"][:] = s.source.timestamps[s.indices]
        if s.media == "faces":
            for pos, (h, w) in s.shapes.items():
                out["box"][pos] = (0.0, 0.0, float(w), float(h))
                out["prob"][pos] = 1.0
                out["status"][pos] = "ok"
                crop = s.crops.pop(pos)
                if self.make_crops:
                    out["crop_pixels"][pos] = crop
        else:
            t0 = time.perf_counter()
            dets = [None if p in s.frame_errors else s.dets.get(p) for p in range(n)]
            face = tracking.follow(dets, out["timestamp"], self.cfg)
            out["box"][:] = face.boxes
            out["landmarks"][:] = face.landmarks.reshape(n, 10)
            out["prob"][:] = face.probs
            out["status"][:] = [_STATE_NAMES[int(v)] for v in face.state]
            self.seconds["track"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if self.make_crops:
                self._crop_all(out, s, s.source)
            s.frames.clear()
            self.seconds["crop"] += time.perf_counter() - t0
        for pos, msg in s.frame_errors.items():
            out["status"][pos], out["error"][pos] = "bad_frame", msg
            out["box"][pos], out["landmarks"][pos], out["prob"][pos] = np.nan, np.nan, np.nan
            if self.make_crops:
                out["crop_pixels"][pos] = 0
        return _with_keys(out, batch, s.row)

    def _crop_all(self, out: dict[str, np.ndarray], s: _Sample, source: FrameSource) -> None:
        """Crops of the rows marked ok/filled: kept frames first, then the others
        re-decoded a chunk at a time."""
        todo = [p for p in range(len(s.indices)) if out["status"][p] in CROPPED]
        missing = [p for p in todo if p not in s.frames]
        for pos in [p for p in todo if p in s.frames]:
            out["crop_pixels"][pos] = crop_pixels(s.frames.pop(pos), out["box"][pos],
                                                  out["landmarks"][pos], s.media, self.cfg)
        for lo in range(0, len(missing), self.cfg.chunk_frames):
            part = missing[lo: lo + self.cfg.chunk_frames]
            for pos, frame in zip(part, source.read(s.indices[part]), strict=True):
                if isinstance(frame, str):
                    # decoded in the first pass but not now: say so rather than crop nothing
                    s.frame_errors[pos] = f"re-decode failed: {frame}"
                    continue
                out["crop_pixels"][pos] = crop_pixels(frame, out["box"][pos],
                                                      out["landmarks"][pos], s.media, self.cfg)
        s.frames.clear()


def _empty_rows(n: int, size: int) -> dict[str, np.ndarray]:
    return {
        "frame_index": np.zeros(n, np.int32),
        "source_frame": np.full(n, -1, np.int32),
        "timestamp": np.full(n, np.nan, np.float64),
        "box": np.full((n, 4), np.nan, np.float32),
        "landmarks": np.full((n, 10), np.nan, np.float32),
        "prob": np.full(n, np.nan, np.float32),
        "status": np.full(n, "no_face", dtype=object),
        "error": np.full(n, None, dtype=object),
        "crop_pixels": np.zeros((n, size, size, 3), np.uint8),
    }


def _with_keys(out: dict[str, np.ndarray], batch: dict[str, np.ndarray], i: int) -> dict:
    n = len(out["frame_index"])
    for key in ("sample_id", "video_id", "subject_id", "shard_id"):
        value = batch[key][i] if key in batch and n else None
        out[key] = np.full(n, None if _is_null(value) else str(value), dtype=object)
    return out


def _is_null(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _opt_float(v: object) -> float | None:
    return None if _is_null(v) else float(v)  # type: ignore[arg-type]


def _opt_str(v: object) -> str | None:
    return None if _is_null(v) else str(v)
