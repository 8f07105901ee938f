"""The face stage: manifest rows in, one row per sampled frame out, with the tracked face's
box, landmarks and square crop.

In: a batch dict of MANIFEST column arrays (``sample_id``, ``video_id``, ``subject_id``,
``path``, ``media``, ``start``, ``end``, ``time_unit``, ``shard_id``; others ignored).
Out (``run``): a dict with the FACES columns except ``crop`` (ROW_COLUMNS). Nulls: NaN in
``timestamp``, ``prob``, ``box`` (N, 4) and ``landmarks`` (N, 10); -1 in ``source_frame``;
None in ``error``. Rows follow the input samples in order, then ``frame_index``. Crops go
to a sink, ``sink(positions, crops)``: output row positions (k,) and uint8 (k, S, S, 3),
a chunk at a time in row order, for rows ok/filled/carried only, so no crop exists for a
``no_face`` row and a sample's crops are never all held at once. ``__call__`` collects them
into ``crop_pixels`` (N, S, S, 3), zeros elsewhere (tests and small batches).
Failures are rows: a sample that cannot be opened gives one ``decode_error`` row
(frame_index -1); a sample that fails later (its frames cannot be read, or MTCNN cannot run
on them) gives ``decode_error`` / ``detect_error`` on each of its sampled frames, the error
naming the cause; an undecodable frame a ``bad_frame`` row. Exceptions of this project's
own code are not converted: they fail the unit. Media 'faces' (pre-cropped face images)
skip detection. Detection runs on equal-size frames pooled across the batch's samples; when
a pooled call fails, each sample is retried alone so that only the bad one fails. With
``detect_mode='keyframe'`` (the default) only the keyframes (``track.keyframes``) are
detected while decoding: a sample's first at once at ``detect_size``, the later ones (with
``keyframe_shrink``) at the size that still shows its faces (``detect.keyframe_detection``;
from the first that finds fewer faces than the keyframe before it on, at ``detect_size``
again, ``_unshrink``), and every decoded frame leaves a grey thumbnail. Once they are, the frames between two
keyframes that disagree (``track.agree``), or between which a thumbnail of the face region
differs from both (``track.hidden_change``: a face that left and came back, a hand, a cut),
are detected at ``detect_size`` too (kept frames, else decoded again), and the rest are
``carried`` by the tracker (null ``prob``). Crops
come from frames kept in memory up to ``cache_mb`` per batch, else from re-decoding, a
chunk at a time, through the same ``crop_pixels`` call that ``recrop`` uses.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline import faults, io
from pipeline.faces import track as tracking
from pipeline.faces.config import FacesConfig
from pipeline.faces.decode import DECODE_ERRORS, FrameSource, open_source, sample_indices
from pipeline.faces.detect import (
    DetectError,
    FaceDetector,
    FrameFaces,
    detect_shape,
    downscale,
    keyframe_detection,
    resolve_device,
)
from pipeline.faces.prefetch import prefetched
from pipeline.faces.recrop import CROPPED, crop_pixels, recrop
from pipeline.faces.rows import empty_rows, opt_float, opt_str, with_keys
from schemas.tables import FACES

__all__ = ["OUTPUT_COLUMNS", "ROW_COLUMNS", "CropSink", "FaceStage", "recrop"]

ROW_COLUMNS = tuple(f.name for f in FACES if f.name != "crop")
OUTPUT_COLUMNS = ROW_COLUMNS + ("crop_pixels",)
_STATE_NAMES = {tracking.NONE: "no_face", tracking.OK: "ok", tracking.FILLED: "filled",
                tracking.CARRIED: "carried"}
# queued frames by how they are detected: (source (h, w), detection (h, w), least face px)
_DetectKey = tuple[tuple[int, int], tuple[int, int], float | None]
_Pending = dict[_DetectKey, list[tuple["_Sample", int, torch.Tensor]]]
# one chunk read: the sample, its first position, the frames (or the decoder's error), seconds
_Read = tuple["_Sample", int, "Sequence[np.ndarray | str] | Exception", float]
CropSink = Callable[[np.ndarray, np.ndarray], None]  # (row positions, uint8 crops)
# Keyframe mode: every frame leaves a grey thumbnail of this longest side; a frame between
# two agreeing keyframes whose face region differs from both by CHANGE_GREY grey levels more
# than they differ from each other gets the frames between them detected (track.hidden_change)
THUMB_SIDE = 64
CHANGE_GREY = 8.0


@dataclass
class _Sample:
    row: int
    media: str
    source: FrameSource | None = None
    status: str | None = None  # a failure of the whole sample: decode_error | detect_error
    error: str | None = None
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    frame_errors: dict[int, str] = field(default_factory=dict)  # position -> message
    shapes: dict[int, tuple[int, int]] = field(default_factory=dict)  # position -> (h, w)
    dets: dict[int, FrameFaces] = field(default_factory=dict)
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # full frames kept for crops
    detected: set[int] | None = None  # keyframe mode: positions detected on (None: all)
    keyed: _DetectKey | None = None  # keyframe mode: how later keyframes are detected
    shrunk: set[int] = field(default_factory=set)  # keyframes detected smaller than detect_size
    thumbs: dict[int, np.ndarray] = field(default_factory=dict)  # keyframe mode: grey (h, w)

    def fail(self, status: str, error: str) -> None:
        if self.status is None:  # the first cause is the one to report
            self.status, self.error = status, error
        self.dets.clear()
        self.frames.clear()
        self.thumbs.clear()


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
        self._exact = cfg.resample == "exact"  # float downscaling for MTCNN (tables made before)
        # chunks decoded ahead in a thread: a GPU worker then never waits on its decoder
        on = cfg.prefetch == "on" or (cfg.prefetch == "auto" and self.device.type == "cuda")
        self._prefetch = 1 if on else 0
        self.seconds: dict[str, float] = defaultdict(float)  # per phase, summed over calls

    def _set_threads(self) -> None:
        # Ray may call from another thread than __init__, where torch runs single-threaded
        if self.num_threads is not None and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)

    def detect_frames(self, frames: list[np.ndarray]) -> list[FrameFaces]:
        """Detection alone on full RGB frames (benchmarks, checks)."""
        self._set_threads()
        return self.detector.detect(frames)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``run`` with the crops collected into ``crop_pixels`` (N, S, S, 3): for tests and
        small batches; the shard stages pass a sink to ``run`` instead."""
        chunks: list[tuple[np.ndarray, np.ndarray]] = []
        out = self.run(batch, lambda pos, crops: chunks.append((pos, crops)))
        size = self.cfg.crop_size
        out["crop_pixels"] = np.zeros((len(out["frame_index"]), size, size, 3), np.uint8)
        for pos, crops in chunks:
            out["crop_pixels"][pos] = crops
        out["crop_pixels"][~np.isin(out["status"], CROPPED)] = 0  # rows that failed later
        return out

    def run(self, batch: dict[str, np.ndarray], sink: CropSink | None = None
            ) -> dict[str, np.ndarray]:
        """The face rows of a batch (ROW_COLUMNS); crops of ok/filled/carried rows go to ``sink``
        (none are made without one)."""
        self._set_threads()
        n = len(batch["sample_id"])
        pending: _Pending = {}
        budget = [self.cfg.cache_mb * 2**20]
        parts = []
        with contextlib.ExitStack() as stack:  # remote media stay copied until cropped
            samples = []
            for i in range(n):
                if i == n // 2:
                    faults.maybe_fail("mid_shard", str(batch["shard_id"][i]))
                samples.append(self._open(batch, i, stack))
            with prefetched(self._reads(samples), self._prefetch) as reads:
                for sample, lo, frames, seconds in reads:
                    self.seconds["decode"] += seconds
                    self._decode(sample, lo, frames, pending, budget)
            for key in list(pending):
                self._flush(pending, key)
            if self.cfg.detect_mode == "keyframe":
                for step in (self._unshrink, self._between):
                    for sample in samples:
                        if sample.detected is not None and sample.status is None:
                            step(sample, pending)
                    for key in list(pending):
                        self._flush(pending, key)
            offset = 0
            for s in samples:
                parts.append(self._rows(batch, s, sink, offset))
                offset += len(parts[-1]["frame_index"])
        if not parts:
            parts = [with_keys(empty_rows(0), batch, 0)]
        return {c: np.concatenate([p[c] for p in parts]) for c in ROW_COLUMNS}

    def _open(self, batch: dict[str, np.ndarray], i: int, stack: contextlib.ExitStack) -> _Sample:
        t0 = time.perf_counter()
        sample = _Sample(row=i, media=str(batch["media"][i]))
        try:
            local = stack.enter_context(io.local_path(str(batch["path"][i])))
            sample.source = open_source(local, sample.media, self.cfg, self.num_threads or 0)
            unit = opt_str(batch["time_unit"][i]) or "s"
            start, end = opt_float(batch["start"][i]), opt_float(batch["end"][i])
            sample.indices = sample_indices(sample.source.timestamps, start, end, unit, self.cfg)
            if len(sample.indices) == 0:
                raise ValueError(f"window [{start}, {end}] {unit} holds none of the "
                                 f"{len(sample.source)} frames")
            if self.cfg.detect_mode == "keyframe" and sample.media != "faces":
                sample.detected = set(tracking.keyframes(len(sample.indices),
                                                         self.cfg.keyframe_every).tolist())
        except DECODE_ERRORS as err:
            sample.source = None
            sample.status, sample.error = "decode_error", _describe(err)
        self.seconds["decode"] += time.perf_counter() - t0
        return sample

    def _read(self, s: _Sample, positions: Sequence[int]) -> Sequence[np.ndarray | str] | None:
        """The frames at these positions of the sample; None (and the sample failed) when
        the decoder raises instead of reporting bad frames."""
        assert s.source is not None
        try:
            return s.source.read(s.indices[np.asarray(positions, dtype=np.int64)])
        except DECODE_ERRORS as err:
            s.fail("decode_error", f"reading frames {positions[0]}..{positions[-1]}: "
                                   f"{_describe(err)}")
            return None

    def _reads(self, samples: list[_Sample]) -> Iterator[_Read]:
        """Every opened sample's frames a chunk at a time, in order (possibly in another
        thread: ``faces.prefetch``); a chunk the decoder raises on comes as the error, and
        ends that sample's reads."""
        for s in samples:
            if s.source is None:
                continue
            for lo in range(0, len(s.indices), self.cfg.chunk_frames):
                if s.status is not None:
                    break
                t0 = time.perf_counter()
                at = s.indices[lo: lo + self.cfg.chunk_frames]
                try:
                    frames: Sequence[np.ndarray | str] | Exception = s.source.read(at)
                except DECODE_ERRORS as err:
                    frames = err
                yield s, lo, frames, time.perf_counter() - t0
                if isinstance(frames, Exception):
                    break

    def _decode(self, s: _Sample, lo: int, frames: Sequence[np.ndarray | str] | Exception,
                pending: _Pending, budget: list[int]) -> None:
        """One chunk of a sample's frames, from position ``lo``: keep full frames for the
        crop pass while the batch's ``cache_mb`` lasts, and queue downscaled copies for
        detection; a chunk that could not be read fails the sample."""
        if s.status is not None:
            return
        if isinstance(frames, Exception):
            last = min(lo + self.cfg.chunk_frames, len(s.indices)) - 1
            s.fail("decode_error", f"reading frames {lo}..{last}: {_describe(frames)}")
            return
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for pos, frame in enumerate(frames, start=lo):
            if isinstance(frame, str):
                s.frame_errors[pos] = frame
                continue
            s.shapes[pos] = (int(frame.shape[0]), int(frame.shape[1]))
            by_shape[s.shapes[pos]].append(pos)
            if frame.nbytes <= budget[0]:
                s.frames[pos] = frame
                budget[0] -= frame.nbytes
        if s.media == "faces":
            return  # pre-cropped: no detection
        for members in by_shape.values():
            if s.detected is not None:  # keyframe mode: keyframes first
                self._thumbs(s, frames, [p - lo for p in members], members)
                members = [p for p in members if p in s.detected]
                if members and s.keyed is None:
                    self._first_keyframe(s, frames, members[0] - lo, members[0])
                    members = members[1:]
            self._queue(s, frames, [p - lo for p in members], members, pending,
                        keyframes=s.detected is not None)

    def _thumbs(self, s: _Sample, frames: Sequence[np.ndarray | str], picks: list[int],
                positions: list[int]) -> None:
        """Keyframe mode: the grey thumbnails of decoded frames (one source size)."""
        t0 = time.perf_counter()
        shape = detect_shape(*s.shapes[positions[0]], THUMB_SIDE)
        small = downscale(_stack(frames, picks), shape, torch.device("cpu")).numpy()
        grey = small.mean(axis=-1, dtype=np.float32).round().astype(np.uint8)
        s.thumbs.update(zip(positions, grey, strict=True))
        self.seconds["detect"] += time.perf_counter() - t0

    def _changed_between(self, s: _Sample, a: int, b: int) -> bool:
        """Whether the thumbnails say that something happened between the agreeing
        keyframes a and b (``track.hidden_change`` over their faces' region)."""
        near = [s.thumbs.get(t) for t in range(a, b + 1)]
        if any(t is None for t in near) or len({t.shape for t in near}) > 1:
            return True  # an undecodable frame or another size between them: look
        region = (slice(None), slice(None))
        boxes = [f.boxes for f in (s.dets[a], s.dets[b]) if len(f)]
        if boxes:
            scale = near[0].shape[0] / s.shapes[a][0]
            stacked = np.concatenate(boxes) * scale
            x1, y1 = np.floor(stacked[:, :2].min(axis=0)).astype(int)
            x2, y2 = np.ceil(stacked[:, 2:].max(axis=0)).astype(int)
            region = (slice(max(y1, 0), max(y2 + 1, 1)), slice(max(x1, 0), max(x2 + 1, 1)))
        crops = [t[region] for t in near]
        return crops[0].size > 0 and tracking.hidden_change(crops, CHANGE_GREY)

    def _first_keyframe(self, s: _Sample, frames: Sequence[np.ndarray | str], pick: int,
                        pos: int) -> None:
        """Keyframe mode: detect the sample's first keyframe at once, at ``detect_size``, and
        choose how its later keyframes (of that source size) are detected: with
        ``keyframe_shrink`` at the size that still shows its faces (``keyframe_detection``)."""
        t0 = time.perf_counter()
        src_hw = s.shapes[pos]
        full = detect_shape(*src_hw, self.cfg.detect_size)
        small = downscale(_stack(frames, [pick]), full, self.device, exact=self._exact)
        try:
            found = self.detector.detect_small(small, src_hw)[0]
        except DetectError as err:
            s.fail("detect_error", str(err))
        else:
            s.dets[pos] = found
            shape, least = (keyframe_detection(found, src_hw, self.cfg.detect_size)
                            if self.cfg.keyframe_shrink else (full, None))
            s.keyed = (src_hw, shape, least)
        self.seconds["detect"] += time.perf_counter() - t0

    def _queue(self, s: _Sample, frames: Sequence[np.ndarray | str], picks: list[int],
               positions: list[int], pending: _Pending, keyframes: bool = False) -> None:
        """Downscale the decoded frames ``frames[picks]`` (one source size) of the sample's
        ``positions`` and queue them for detection, detecting once a batch is full. Later
        keyframes of the first keyframe's size are detected as it chose (``s.keyed``)."""
        if not positions:
            return
        t0 = time.perf_counter()
        src_hw = s.shapes[positions[0]]
        key: _DetectKey = (src_hw, detect_shape(*src_hw, self.cfg.detect_size), None)
        if keyframes and s.keyed is not None and s.keyed[0] == src_hw and s.keyed != key:
            key = s.keyed
            s.shrunk.update(positions)
        small = downscale(_stack(frames, picks), key[1], self.device, exact=self._exact)
        self.seconds["detect"] += time.perf_counter() - t0
        queue = pending.setdefault(key, [])
        queue.extend((s, p, small[j]) for j, p in enumerate(positions))
        if len(queue) >= self.cfg.detect_batch:
            self._flush(pending, key)

    def _unshrink(self, s: _Sample, pending: _Pending) -> None:
        """Keyframe mode, once the keyframes are detected: from the first keyframe detected
        at the reduced size that finds fewer faces than the keyframe before it (the face
        left, or shrank below what that size shows), queue that one and every later reduced
        keyframe for detection at ``detect_size`` (a face that stays small would otherwise
        be missed on all of them, and the frames between them carried as faceless)."""
        assert s.detected is not None
        keys = sorted(s.detected)
        for a, b in zip(keys[:-1], keys[1:], strict=False):
            before, after = self._found(s, a), self._found(s, b)
            if b in s.shrunk and before is not None and after is not None \
                    and len(after) < len(before):
                self._detect_again(s, [k for k in keys if k >= b and k in s.shrunk], pending)
                return

    def _between(self, s: _Sample, pending: _Pending) -> None:
        """Keyframe mode, once the keyframes are detected: queue the frames between two
        keyframes whose faces disagree (``tracking.agree``), or between which a thumbnail
        differs from both (``_changed_between``), for detection, from the kept frames or
        decoded again; the frames between the other keyframes stay skipped."""
        assert s.detected is not None
        keys = sorted(s.detected)
        redo = [t for a, b in zip(keys[:-1], keys[1:], strict=False) if b - a > 1
                and (not tracking.agree(self._found(s, a), self._found(s, b),
                                        self.cfg.keyframe_iou)
                     or self._changed_between(s, a, b))
                for t in range(a + 1, b)]
        s.thumbs.clear()  # used up: the batch's other samples need the memory
        s.detected.update(redo)
        self._detect_again(s, redo, pending)

    def _detect_again(self, s: _Sample, redo: list[int], pending: _Pending) -> None:
        """Queue these positions for detection at ``detect_size``, from the kept frames or
        decoded again (a frame that no longer decodes becomes a frame error)."""
        for lo in range(0, len(redo), self.cfg.chunk_frames):
            part = redo[lo: lo + self.cfg.chunk_frames]
            missing = [p for p in part if p not in s.frames]
            t0 = time.perf_counter()
            read = self._read(s, missing) if missing else []
            self.seconds["decode"] += time.perf_counter() - t0
            if read is None:
                return
            again = dict(zip(missing, read, strict=True))
            frames = [s.frames[p] if p in s.frames else again[p] for p in part]
            by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
            for j, (pos, frame) in enumerate(zip(part, frames, strict=True)):
                if isinstance(frame, str):  # decoded in the first pass but not now
                    s.frame_errors[pos] = f"re-decode failed: {frame}"
                else:
                    by_shape[s.shapes[pos]].append(j)
            for picks in by_shape.values():
                self._queue(s, frames, picks, [part[j] for j in picks], pending)

    @staticmethod
    def _found(s: _Sample, pos: int) -> FrameFaces | None:
        """The faces detected on a frame; None when it could not be decoded or detected."""
        return None if pos in s.frame_errors else s.dets.get(pos)

    def _flush(self, pending: _Pending, key: _DetectKey) -> None:
        """Detect on one size's queued frames; when the pooled call fails, each sample in
        it is tried alone, and a sample that still fails gets ``detect_error``."""
        src_hw, _, least = key
        queue = [q for q in pending.pop(key, []) if q[0].status is None]
        if not queue:
            return
        t0 = time.perf_counter()
        by_sample: dict[int, list] = {}
        for q in queue:
            by_sample.setdefault(id(q[0]), []).append(q)
        groups = [queue] + (list(by_sample.values()) if len(by_sample) > 1 else [])
        for k, group in enumerate(groups):
            try:
                found = self.detector.detect_small(torch.stack([q[2] for q in group]), src_hw,
                                                   least)
            except DetectError as err:
                if k == 0 and len(groups) > 1:
                    continue  # the pooled call: retry sample by sample
                group[0][0].fail("detect_error", str(err))
                continue
            for (sample, pos, _), faces in zip(group, found, strict=True):
                sample.dets[pos] = faces
            if k == 0:
                break
        self.seconds["detect"] += time.perf_counter() - t0

    def _rows(self, batch: dict[str, np.ndarray], s: _Sample, sink: CropSink | None,
              offset: int) -> dict[str, np.ndarray]:
        if s.source is None:
            out = empty_rows(1)
            out["frame_index"][0] = -1
            out["status"][0], out["error"][0] = s.status, s.error
            return with_keys(out, batch, s.row)
        n = len(s.indices)
        out = empty_rows(n)
        out["frame_index"][:] = np.arange(n)
        out["source_frame"][:] = s.indices
        out["timestamp"][:] = s.source.timestamps[s.indices]
        if s.status is None and s.media == "faces":
            for pos, (h, w) in s.shapes.items():
                out["box"][pos] = (0.0, 0.0, float(w), float(h))
                out["prob"][pos] = 1.0
                out["status"][pos] = "ok"
        elif s.status is None:
            t0 = time.perf_counter()
            dets = [self._found(s, p) for p in range(n)]
            skipped = None
            if s.detected is not None:
                skipped = np.array([p not in s.detected and p not in s.frame_errors
                                    for p in range(n)], dtype=bool)
            face = tracking.follow(dets, out["timestamp"], self.cfg, skipped)
            out["box"][:] = face.boxes
            out["landmarks"][:] = face.landmarks.reshape(n, 10)
            out["prob"][:] = face.probs
            out["status"][:] = [_STATE_NAMES[int(v)] for v in face.state]
            self.seconds["track"] += time.perf_counter() - t0
        if s.status is None and sink is not None:
            t0 = time.perf_counter()
            self._crop_all(out, s, sink, offset)
            self.seconds["crop"] += time.perf_counter() - t0
        s.frames.clear()
        s.dets.clear()
        s.thumbs.clear()
        if s.status is not None:  # failed after opening: every decodable frame says so
            out["status"][:], out["error"][:] = s.status, s.error
            out["box"][:], out["landmarks"][:], out["prob"][:] = np.nan, np.nan, np.nan
        for pos, msg in s.frame_errors.items():
            out["status"][pos], out["error"][pos] = "bad_frame", msg
            out["box"][pos], out["landmarks"][pos], out["prob"][pos] = np.nan, np.nan, np.nan
        return with_keys(out, batch, s.row)

    def _crop_all(self, out: dict[str, np.ndarray], s: _Sample, sink: CropSink,
                  offset: int) -> None:
        """Crops of the rows marked ok/filled/carried, ``chunk_frames`` at a time in row order, to
        the sink: from kept frames, else re-decoded. Frames of other rows are never cropped."""
        todo = np.flatnonzero(np.isin(out["status"], CROPPED))
        size = self.cfg.crop_size
        for lo in range(0, len(todo), self.cfg.chunk_frames):
            part = todo[lo: lo + self.cfg.chunk_frames]
            missing = [int(p) for p in part if int(p) not in s.frames]
            again: dict[int, np.ndarray | str] = {}
            if missing:
                read = self._read(s, missing)
                if read is None:
                    return  # the sample failed: the rows say so, the sink's crops are moot
                again = dict(zip(missing, read, strict=True))
            crops = np.empty((len(part), size, size, 3), np.uint8)
            made = np.ones(len(part), dtype=bool)
            for j, pos in enumerate(part.tolist()):
                frame = s.frames.pop(pos) if pos in s.frames else again[pos]
                if isinstance(frame, str):
                    # decoded in the first pass but not now: say so rather than crop nothing
                    s.frame_errors[pos] = f"re-decode failed: {frame}"
                    made[j] = False
                    continue
                crops[j] = crop_pixels(frame, out["box"][pos], out["landmarks"][pos], s.media,
                                       self.cfg)
            sink(offset + part[made], crops if made.all() else crops[made])


def _stack(frames: Sequence[np.ndarray | str], picks: list[int]) -> np.ndarray:
    """The picked frames as one (k, H, W, 3) array: the decoder's own array when it is
    exactly that, else one copy."""
    if isinstance(frames, np.ndarray) and picks == list(range(len(frames))):
        return frames
    return np.stack([frames[p] for p in picks])  # type: ignore[misc]


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip()}"
