"""The keyframe-mode steps of the face stage (``faces.detect_mode='keyframe'``), as a base
class of ``FaceStage``.

In: a ``Sample`` being decoded (its chunks of frames), later its detected keyframes. Out:
the sample's first keyframe detected at once, the size its later keyframes are detected at
(``keyed``), a grey thumbnail of every frame, and, once the keyframes are detected, the
frames to detect again: keyframes shrunk too far (``_unshrink``) and the frames between
keyframes that disagree or between which a thumbnail changed (``_between``), queued on the
stage's ``pending`` detections.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from pipeline.faces import track as tracking
from pipeline.faces.config import FacesConfig
from pipeline.faces.detect import (
    DetectError,
    FaceDetector,
    detect_shape,
    downscale,
    keyframe_detection,
)
from pipeline.faces.sample import Pending, Sample, stack_frames

# Keyframe mode: every frame leaves a grey thumbnail of this longest side; a frame between
# two agreeing keyframes whose face region differs from both by CHANGE_GREY grey levels more
# than they differ from each other gets the frames between them detected (track.hidden_change)
THUMB_SIDE = 64
CHANGE_GREY = 8.0


class KeyframeSteps:
    """Keyframe-mode methods of ``FaceStage``; they use the stage's detector, settings and
    its ``_queue``, ``_read`` and ``_found``."""

    cfg: FacesConfig
    detector: FaceDetector
    device: torch.device
    seconds: dict[str, float]
    _exact: bool

    def _thumbs(self, s: Sample, frames: Sequence[np.ndarray | str], picks: list[int],
                positions: list[int]) -> None:
        """Keyframe mode: the grey thumbnails of decoded frames (one source size)."""
        t0 = time.perf_counter()
        shape = detect_shape(*s.shapes[positions[0]], THUMB_SIDE)
        small = downscale(stack_frames(frames, picks), shape, torch.device("cpu")).numpy()
        grey = small.mean(axis=-1, dtype=np.float32).round().astype(np.uint8)
        s.thumbs.update(zip(positions, grey, strict=True))
        self.seconds["detect"] += time.perf_counter() - t0

    def _changed_between(self, s: Sample, a: int, b: int) -> bool:
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

    def _first_keyframe(self, s: Sample, frames: Sequence[np.ndarray | str], pick: int,
                        pos: int) -> None:
        """Keyframe mode: detect the sample's first keyframe at once, at ``detect_size``, and
        choose how its later keyframes (of that source size) are detected: with
        ``keyframe_shrink`` at the size that still shows its faces (``keyframe_detection``)."""
        t0 = time.perf_counter()
        src_hw = s.shapes[pos]
        full = detect_shape(*src_hw, self.cfg.detect_size)
        small = downscale(stack_frames(frames, [pick]), full, self.device, exact=self._exact)
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

    def _unshrink(self, s: Sample, pending: Pending) -> None:
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

    def _between(self, s: Sample, pending: Pending) -> None:
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

    def _detect_again(self, s: Sample, redo: list[int], pending: Pending) -> None:
        """Queue these positions for detection at ``detect_size``, from the kept frames or
        decoded again (a frame that no longer decodes becomes a frame error)."""
        redo = [p for p in redo if p not in s.frame_errors]  # failed once: no second read
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
        if s.source is not None:
            s.source.close()  # read again only for these: let the decoder go
