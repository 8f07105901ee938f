"""One face per sample: link detections over time, keep the best track, smooth it and
fill its short gaps.

In: per sampled frame a ``FrameFaces`` (or ``None`` for a frame that could not be
decoded, or that keyframe mode did not detect on: ``skipped``), the frames' timestamps and
a ``FacesConfig``.
Out: a ``FaceTrack`` with per-frame state (OK, FILLED, CARRIED or NONE), boxes (T, 4),
landmarks (T, 5, 2) and probabilities (T,), float32 with NaN where there is no face and
on interpolated frames. Decoded-but-missed frames count towards a gap; undecodable frames
are never filled; skipped frames inside a track are CARRIED whatever the gap's length
(``keyframes`` decides where skipping is safe), and skipped frames outside one stay NONE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.faces.config import FacesConfig
from pipeline.faces.detect import FrameFaces

NONE, OK, FILLED, CARRIED = 0, 1, 2, 3


@dataclass
class FaceTrack:
    state: np.ndarray  # (T,) int8: NONE | OK | FILLED | CARRIED
    boxes: np.ndarray  # (T, 4) float32
    landmarks: np.ndarray  # (T, 5, 2) float32
    probs: np.ndarray  # (T,) float32


@dataclass
class _Chain:
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    score: float = 0.0


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (n, 4) against b (m, 4) -> (n, m)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def link(dets: Sequence[FrameFaces | None], min_iou: float) -> list[_Chain]:
    """Greedy IoU linking of each frame's detections to the chains' last boxes.

    A chain's score is the sum of area * prob over its detections, each weighted by
    0.5 + 0.5 * IoU with the chain's previous box (0.5 for the first): large, confident
    faces that stay put win over brief or jumpy ones. Chains stay open across gaps, so a
    face that comes back where it was continues its chain.
    """
    chains: list[_Chain] = []
    for t, faces in enumerate(dets):
        if faces is None or len(faces) == 0:
            continue
        free = list(range(len(chains)))
        last = np.array([chains[c].boxes[-1] for c in free]).reshape(-1, 4)
        overlap = iou(faces.boxes, last) if free else np.zeros((len(faces), 0))
        taken_d: set[int] = set()
        taken_c: set[int] = set()
        for flat in np.argsort(-overlap, axis=None, kind="stable"):
            d, c = divmod(int(flat), overlap.shape[1])
            if overlap[d, c] < min_iou:
                break
            if d in taken_d or c in taken_c:
                continue
            taken_d.add(d)
            taken_c.add(c)
            _extend(chains[free[c]], t, faces, d, 0.5 + 0.5 * float(overlap[d, c]))
        for d in range(len(faces)):
            if d not in taken_d:
                chains.append(_Chain())
                _extend(chains[-1], t, faces, d, 0.5)
    return chains


def _extend(chain: _Chain, t: int, faces: FrameFaces, d: int, weight: float) -> None:
    chain.frames.append(t)
    chain.boxes.append(faces.boxes[d].astype(np.float64))
    chain.landmarks.append(faces.landmarks[d].astype(np.float64))
    chain.probs.append(float(faces.probs[d]))
    chain.score += weight * _area(faces.boxes[d]) * float(faces.probs[d])


def _smooth(frames: np.ndarray, values: np.ndarray, window: int) -> np.ndarray:
    """Local linear fit over the detections within window // 2 frames of each one: noise
    is averaged out, while steady motion passes unbiased, also at the track's ends
    (a plain moving average would pull the end boxes towards the middle)."""
    if window <= 1:
        return values
    half = window // 2
    flat = values.reshape(len(values), -1)
    out = np.empty_like(flat)
    for i, t in enumerate(frames):
        near = np.abs(frames - t) <= half
        x = (frames[near] - t).astype(np.float64)
        y = flat[near]
        if np.ptp(x) == 0:
            out[i] = y.mean(axis=0)
            continue
        dx = x - x.mean()
        slope = (dx[:, None] * (y - y.mean(axis=0))).sum(axis=0) / (dx**2).sum()
        out[i] = y.mean(axis=0) - slope * x.mean()
    return out.reshape(values.shape)


def keyframes(n: int, every: int) -> np.ndarray:
    """Positions detected first in keyframe mode: 0, every, 2 * every, ... and n - 1."""
    if n <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.append(np.arange(0, n, every, dtype=np.int64), n - 1))


def agree(a: FrameFaces | None, b: FrameFaces | None, min_iou: float) -> bool:
    """Whether the faces between two keyframes can be carried instead of detected: both
    decoded, the same number of faces (none on both also agrees), and each face of one
    matched to its own face of the other at IoU >= min_iou (greedy, best pairs first). A
    face that appears, leaves, jumps or a second face that enters makes them disagree."""
    if a is None or b is None or len(a) != len(b):
        return False
    if len(a) == 0:
        return True
    overlap = iou(a.boxes, b.boxes)
    used_a: set[int] = set()
    used_b: set[int] = set()
    for flat in np.argsort(-overlap, axis=None, kind="stable"):
        i, j = divmod(int(flat), overlap.shape[1])
        if overlap[i, j] < min_iou:
            return False
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        if len(used_a) == len(a):
            return True
    return False


def hidden_change(thumbs: Sequence[np.ndarray], grey: float) -> bool:
    """Whether something happened between two agreeing keyframes that they do not show (a
    face that left and came back, a hand over it, a cut to another view and back): given
    the grey thumbnails of the face region (the same (h, w) each) from one keyframe to the
    next, some frame between them differs from both keyframes by more (mean absolute grey
    level) than the keyframes differ from each other, plus ``grey``. Frames of a steady
    face stay nearer one of the two keyframes than the keyframes are to each other."""
    first, last = (t.astype(np.float32) for t in (thumbs[0], thumbs[-1]))
    apart = float(np.abs(first - last).mean())
    for t in thumbs[1:-1]:
        x = t.astype(np.float32)
        if min(np.abs(x - first).mean(), np.abs(x - last).mean()) > apart + grey:
            return True
    return False


def _carried_score(chain: _Chain, skip: np.ndarray) -> float:
    """What the skipped frames between a chain's detections would have added to its score
    had they been detected (the mean of the two detections' area * prob each): a face
    seen on few keyframes but carried over many frames competes as per-frame detection
    would let it."""
    extra = 0.0
    for k in range(len(chain.frames) - 1):
        a, b = chain.frames[k], chain.frames[k + 1]
        count = int(skip[a + 1: b].sum())
        if count:
            mass = [_area(chain.boxes[i]) * chain.probs[i] for i in (k, k + 1)]
            extra += count * 0.5 * (mass[0] + mass[1])
    return extra


def follow(
    dets: Sequence[FrameFaces | None], timestamps: np.ndarray, cfg: FacesConfig,
    skipped: np.ndarray | None = None,
) -> FaceTrack:
    """The sample's face track: the best chain, smoothed, short gaps interpolated, and
    frames that were not detected on (``skipped``, bool (T,)) carried between its
    detections."""
    n = len(dets)
    track = FaceTrack(
        state=np.full(n, NONE, np.int8),
        boxes=np.full((n, 4), np.nan, np.float32),
        landmarks=np.full((n, 5, 2), np.nan, np.float32),
        probs=np.full(n, np.nan, np.float32),
    )
    chains = link(dets, cfg.track_iou)
    if not chains:
        return track
    skip = np.zeros(n, bool) if skipped is None else np.asarray(skipped, bool)
    if skip.any():
        for chain in chains:
            chain.score += _carried_score(chain, skip)
    best = max(chains, key=lambda c: c.score)  # max keeps the first of equal scores
    frames = np.asarray(best.frames)
    boxes = _smooth(frames, np.stack(best.boxes), cfg.smooth)
    marks = _smooth(frames, np.stack(best.landmarks), cfg.smooth)
    track.state[frames] = OK
    track.boxes[frames] = boxes
    track.landmarks[frames] = marks
    track.probs[frames] = best.probs
    decodable = np.array([d is not None for d in dets]) | skip
    ts = np.asarray(timestamps, np.float64)
    for k in range(len(frames) - 1):
        a, b = int(frames[k]), int(frames[k + 1])
        missed = int((~skip[a + 1: b]).sum())  # detected on, without this face
        if b - a - 1 == 0 or missed > cfg.max_gap:
            continue
        for t in range(a + 1, b):
            if not decodable[t]:
                continue
            # interpolate on time so that variable frame rates move the box correctly
            span = ts[b] - ts[a]
            w = (ts[t] - ts[a]) / span if np.isfinite(span) and span > 0 else (t - a) / (b - a)
            track.state[t] = CARRIED if skip[t] else FILLED
            track.boxes[t] = (1 - w) * boxes[k] + w * boxes[k + 1]
            track.landmarks[t] = (1 - w) * marks[k] + w * marks[k + 1]
    return track
