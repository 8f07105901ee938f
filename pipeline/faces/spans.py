"""How the face stage reads a video: several chunks per decoder call (a span), and how long
it waits for them.

In: a ``FrameSource``, the positions to read, the chunk size and the bytes the frame cache
still keeps. Out: ``span_frames`` (how many frames one call reads), ``read_span`` (the
frames of one span, as one decoder call where it can), ``cache_after`` (the cache left once
the stage keeps a span's frames: the rule ``FaceStage._decode`` applies) and ``waited``
(items of an iterator, timing the waits). Why spans: decord must be stopped after each
call (or its thread decodes the rest of the file into memory while the stage works), so
each call starts again at the keyframe before its first frame; reading what the cache
keeps anyway in one call does that once (docs/benchmarks.md, "Decoding in spans").
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np

from pipeline.faces.decode import FrameSource

T = TypeVar("T")
# the most frames' bytes decoded in one call, when the frame cache keeps that many anyway
# (one buffer holds a span: it lives while any of its frames is kept)
SPAN_BYTES = 64 * 2**20


def span_frames(chunk: int, frame_bytes: int | None, cache_left: float) -> int:
    """Frames of a video decoded in one call: as many whole chunks as the frame cache keeps
    (``cache_left`` bytes) up to SPAN_BYTES, at least one chunk."""
    if not frame_bytes:
        return chunk
    return chunk * max(1, int(min(cache_left, SPAN_BYTES) // (chunk * frame_bytes)))


def read_span(source: FrameSource, at: np.ndarray, chunk: int) -> Sequence[np.ndarray | str]:
    """The frames at these source indices. A span decord could not decode comes back from
    another decoder (PyAV, not one array): it is read again a chunk at a time, so that only
    the chunk holding the bad frame comes that way, as without spans."""
    frames = source.read(at)
    if len(at) > chunk and not isinstance(frames, np.ndarray):
        frames = [f for k in range(0, len(at), chunk) for f in source.read(at[k: k + chunk])]
    return frames


def cache_after(frames: Sequence[np.ndarray | str], left: int) -> int:
    """The frame cache's bytes left once these frames are kept in order while they fit."""
    for frame in frames:
        if not isinstance(frame, str) and frame.nbytes <= left:
            left -= frame.nbytes
    return left


def waited(items: Iterator[T], seconds: dict[str, float]) -> Iterator[T]:
    """The items, adding the time spent waiting for each to ``seconds['wait']``."""
    while True:
        t0 = time.perf_counter()
        try:
            item = next(items)
        except StopIteration:
            return
        finally:
            seconds["wait"] += time.perf_counter() - t0
        yield item
