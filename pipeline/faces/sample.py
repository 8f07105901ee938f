"""The face stage's working state of one sample, and the types its steps pass around.

In: nothing (definitions only). Out: ``Sample`` (what the stage knows of one manifest row
while it decodes, detects and tracks it), ``DetectKey`` / ``Pending`` (frames queued for
MTCNN by how they are detected), ``Read`` (one chunk as the reader hands it over, or a
``ReadFailed``), and two
helpers, ``stack_frames`` and ``describe``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.faces.decode import FrameSource
from pipeline.faces.detect import FrameFaces

# queued frames by how they are detected: (source (h, w), detection (h, w), least face px)
DetectKey = tuple[tuple[int, int], tuple[int, int], float | None]
Pending = dict[DetectKey, list[tuple["Sample", int, torch.Tensor]]]
# one step of reading: the sample, its first position, the frames (or the decoder's error),
# seconds; (sample, -1, None, seconds) when the sample was opened
Read = tuple["Sample", int, "Sequence[np.ndarray | str] | ReadFailed | None", float]


@dataclass(frozen=True)
class ReadFailed:
    """The decoder raised on the frames read from a chunk's first position to ``last``."""

    last: int
    error: BaseException


@dataclass
class Sample:
    """One manifest row while the stage works on it (positions are sampled-frame indices)."""

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
    keyed: DetectKey | None = None  # keyframe mode: how later keyframes are detected
    shrunk: set[int] = field(default_factory=set)  # keyframes detected smaller than detect_size
    thumbs: dict[int, np.ndarray] = field(default_factory=dict)  # keyframe mode: grey (h, w)

    def fail(self, status: str, error: str) -> None:
        if self.status is None:  # the first cause is the one to report
            self.status, self.error = status, error
        self.dets.clear()
        self.frames.clear()
        self.thumbs.clear()


def stack_frames(frames: Sequence[np.ndarray | str], picks: list[int]) -> np.ndarray:
    """The picked frames as one (k, H, W, 3) array: the decoder's own array when it is
    exactly that, else one copy."""
    if isinstance(frames, np.ndarray) and picks == list(range(len(frames))):
        return frames
    return np.stack([frames[p] for p in picks])  # type: ignore[misc]


# decord's (dmlc) log prefix: "[17:20:40] /github/workspace/src/video/video_reader.cc:486: "
# (the wall-clock time would make two runs' error rows differ)
_DMLC_PREFIX = re.compile(r"^\[\d{2}:\d{2}:\d{2}\] \S+:\d+: ")


def describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {_DMLC_PREFIX.sub('', str(err).strip())}"
