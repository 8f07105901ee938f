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
again, ``_unshrink``), and every decoded frame leaves a grey thumbnail. Once they are,
the frames between two keyframes that disagree (``track.agree``), or between which a
thumbnail of the face region differs from both (``track.hidden_change``: a face that left
and came back, a hand, a cut), are detected at ``detect_size`` too (kept frames, else
decoded again), and the rest are ``carried`` by the tracker (null ``prob``). Crops come
from frames kept in memory up to ``cache_mb`` per batch, else from re-decoding, a chunk at
a time, through the same ``crop_pixels`` call that ``recrop`` uses. A video's frames that
this cache keeps are decoded several chunks per call (``_reads``).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from pipeline import faults, io
from pipeline.faces import track as tracking
from pipeline.faces.config import FacesConfig
from pipeline.faces.decode import DECODE_ERRORS, open_source, sample_indices
from pipeline.faces.detect import (
    DetectError,
    FaceDetector,
    FrameFaces,
    detect_shape,
    downscale,
    resolve_device,
)
from pipeline.faces.keyframe_steps import KeyframeSteps
from pipeline.faces.prefetch import prefetched
from pipeline.faces.recrop import CROPPED, crop_pixels, recrop
from pipeline.faces.rows import empty_rows, opt_float, opt_str, with_keys
from pipeline.faces.sample import (
    DetectKey,
    Pending,
    Read,
    ReadFailed,
    Sample,
    describe,
    stack_frames,
)
from pipeline.faces.spans import cache_after, read_span, span_frames, waited
from schemas.tables import FACES

__all__ = ["OUTPUT_COLUMNS", "ROW_COLUMNS", "CropSink", "FaceStage", "recrop"]

ROW_COLUMNS = tuple(f.name for f in FACES if f.name != "crop")
OUTPUT_COLUMNS = ROW_COLUMNS + ("crop_pixels",)
_STATE_NAMES = {tracking.NONE: "no_face", tracking.OK: "ok", tracking.FILLED: "filled",
                tracking.CARRIED: "carried"}
CropSink = Callable[[np.ndarray, np.ndarray], None]  # (row positions, uint8 crops)


class FaceStage(KeyframeSteps):
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
        # per phase, summed over calls; "wait": the time ``run`` waited for the frames of
        # its first pass (all of their decoding, or with prefetch what detection did not hide)
        self.seconds: dict[str, float] = defaultdict(float)

    @property
    def prefetching(self) -> bool:
        """Whether the next chunk is decoded in a thread while this one is detected."""
        return self._prefetch > 0

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
        pending: Pending = {}
        budget = [self.cfg.cache_mb * 2**20]
        parts = []
        with contextlib.ExitStack() as stack:  # remote media stay copied until cropped
            samples = []
            with prefetched(self._reads(batch, stack), self._prefetch) as reads:
                for sample, lo, frames, seconds in waited(reads, self.seconds):
                    self.seconds["decode"] += seconds
                    if frames is None:  # opened (or not: a decode_error sample)
                        samples.append(sample)
                    else:
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

    def _open(self, batch: dict[str, np.ndarray], i: int, stack: contextlib.ExitStack) -> Sample:
        sample = Sample(row=i, media=str(batch["media"][i]))
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
            sample.status, sample.error = "decode_error", describe(err)
        return sample

    def _read(self, s: Sample, positions: Sequence[int]) -> Sequence[np.ndarray | str] | None:
        """The frames at these positions of the sample; None (and the sample failed) when
        the decoder raises instead of reporting bad frames."""
        assert s.source is not None
        try:
            return s.source.read(s.indices[np.asarray(positions, dtype=np.int64)])
        except DECODE_ERRORS as err:
            s.fail("decode_error", f"reading frames {positions[0]}..{positions[-1]}: "
                                   f"{describe(err)}")
            return None

    def _reads(self, batch: dict[str, np.ndarray], stack: contextlib.ExitStack
               ) -> Iterator[Read]:
        """Open the batch's samples one after another and read each one's frames (possibly
        in another thread: ``faces.prefetch``): (sample, -1, None, seconds) for its opening,
        then (sample, first position, frames, seconds) per chunk of ``chunk_frames``, where
        frames the decoder raises on come as ``ReadFailed`` and end that sample's reads.
        A video's frames that the frame cache (``cache_mb``) will keep anyway are decoded
        in one call of several chunks (``spans``). A sample's decoder is let go once its
        frames are read (re-reads open it again), so a shard of many samples never holds
        more than a couple open."""
        n = len(batch["sample_id"])
        step = self.cfg.chunk_frames
        left = self.cfg.cache_mb * 2**20  # the cache as `_decode` fills it, in this order
        for i in range(n):
            if i == n // 2:
                faults.maybe_fail("mid_shard", str(batch["shard_id"][i]))
            t0 = time.perf_counter()
            s = self._open(batch, i, stack)
            yield s, -1, None, time.perf_counter() - t0
            if s.source is None:
                continue
            size, lo = s.source.frame_bytes, 0
            while lo < len(s.indices) and s.status is None:
                span = span_frames(step, size, left)
                at = s.indices[lo: lo + span]
                t0 = time.perf_counter()
                try:
                    frames = read_span(s.source, at, step)
                except DECODE_ERRORS as err:
                    yield s, lo, ReadFailed(lo + len(at) - 1, err), time.perf_counter() - t0
                    break
                seconds = time.perf_counter() - t0
                for k in range(0, len(frames), step):
                    yield s, lo + k, frames[k: k + step], seconds if k == 0 else 0.0
                left = cache_after(frames, left)
                lo += len(at)
            s.source.close()

    def _decode(self, s: Sample, lo: int, frames: Sequence[np.ndarray | str] | ReadFailed,
                pending: Pending, budget: list[int]) -> None:
        """One chunk of a sample's frames, from position ``lo``: keep full frames for the
        crop pass while the batch's ``cache_mb`` lasts, and queue downscaled copies for
        detection; a chunk that could not be read fails the sample."""
        if s.status is not None:
            return
        if isinstance(frames, ReadFailed):
            s.fail("decode_error", f"reading frames {lo}..{frames.last}: "
                                   f"{describe(frames.error)}")
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

    def _queue(self, s: Sample, frames: Sequence[np.ndarray | str], picks: list[int],
               positions: list[int], pending: Pending, keyframes: bool = False) -> None:
        """Downscale the decoded frames ``frames[picks]`` (one source size) of the sample's
        ``positions`` and queue them for detection, detecting once a batch is full. Later
        keyframes of the first keyframe's size are detected as it chose (``s.keyed``)."""
        if not positions:
            return
        t0 = time.perf_counter()
        src_hw = s.shapes[positions[0]]
        key: DetectKey = (src_hw, detect_shape(*src_hw, self.cfg.detect_size), None)
        if keyframes and s.keyed is not None and s.keyed[0] == src_hw and s.keyed != key:
            key = s.keyed
            s.shrunk.update(positions)
        small = downscale(stack_frames(frames, picks), key[1], self.device, exact=self._exact)
        self.seconds["detect"] += time.perf_counter() - t0
        queue = pending.setdefault(key, [])
        queue.extend((s, p, small[j]) for j, p in enumerate(positions))
        if len(queue) >= self.cfg.detect_batch:
            self._flush(pending, key)

    @staticmethod
    def _found(s: Sample, pos: int) -> FrameFaces | None:
        """The faces detected on a frame; None when it could not be decoded or detected."""
        return None if pos in s.frame_errors else s.dets.get(pos)

    def _flush(self, pending: Pending, key: DetectKey) -> None:
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

    def _rows(self, batch: dict[str, np.ndarray], s: Sample, sink: CropSink | None,
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
            s.source.close()
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

    def _crop_all(self, out: dict[str, np.ndarray], s: Sample, sink: CropSink,
                  offset: int) -> None:
        """Crops of the rows marked ok/filled/carried, ``chunk_frames`` at a time in row order, to
        the sink: from kept frames, else re-decoded. Frames of other rows are never cropped."""
        todo = np.flatnonzero(np.isin(out["status"], CROPPED))
        todo = todo[np.array([int(p) not in s.frame_errors for p in todo], dtype=bool)]
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
