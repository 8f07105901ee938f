"""One face per sample: link detections over time, keep the best track, smooth it and
fill its short gaps.

In: per sampled frame a ``FrameFaces`` (or ``None`` for a frame that could not be
decoded), the frames' timestamps and a ``FacesConfig``.
Out: a ``FaceTrack`` with per-frame state (OK, FILLED or NONE), boxes (T, 4),
landmarks (T, 5, 2) and probabilities (T,), float32 with NaN where there is no face.
Decoded-but-missed frames count towards a gap; undecodable frames are never filled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.faces.config import FacesConfig
from pipeline.faces.detect import FrameFaces

NONE, OK, FILLED = 0, 1, 2


@dataclass
class FaceTrack:
    state: np.ndarray  # (T,) int8: NONE | OK | FILLED
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


def follow(
    dets: Sequence[FrameFaces | None], timestamps: np.ndarray, cfg: FacesConfig
) -> FaceTrack:
    """The sample's face track: the best chain, smoothed, short gaps interpolated."""
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
    best = max(chains, key=lambda c: c.score)  # max keeps the first of equal scores
    frames = np.asarray(best.frames)
    boxes = _smooth(frames, np.stack(best.boxes), cfg.smooth)
    marks = _smooth(frames, np.stack(best.landmarks), cfg.smooth)
    track.state[frames] = OK
    track.boxes[frames] = boxes
    track.landmarks[frames] = marks
    track.probs[frames] = best.probs
    decodable = np.array([d is not None for d in dets])
    ts = np.asarray(timestamps, np.float64)
    for k in range(len(frames) - 1):
        a, b = int(frames[k]), int(frames[k + 1])
        if b - a - 1 == 0 or b - a - 1 > cfg.max_gap:
            continue
        for t in range(a + 1, b):
            if not decodable[t]:
                continue
            # interpolate on time so that variable frame rates move the box correctly
            span = ts[b] - ts[a]
            w = (ts[t] - ts[a]) / span if np.isfinite(span) and span > 0 else (t - a) / (b - a)
            track.state[t] = FILLED
            track.boxes[t] = (1 - w) * boxes[k] + w * boxes[k + 1]
            track.landmarks[t] = (1 - w) * marks[k] + w * marks[k + 1]
    return track
