"""Frame sources and the sampling policy: which frames of a sample to decode, and decoding
exactly those, a chunk at a time.

In: a local path (a video file, a folder of frame images or one image file), the sample's
window (``start``, ``end``, ``time_unit``) and a ``FacesConfig``.
Out: ``FrameSource`` objects with per-frame ``timestamps`` (seconds; from the container
for videos, position / ``folder_fps`` for folders) and ``read(indices)``, which returns
for every index either an RGB uint8 (H, W, 3) array or the error message of that frame (a
video chunk that decodes cleanly comes back as one (N, H, W, 3) array, not N copies).
``expected_frames`` estimates a sample's sampled frame count from its probe, before decoding.
Opening a source that cannot be decoded raises one of ``DECODE_ERRORS``.
"""

from __future__ import annotations

import fractions
import math
import os
from collections.abc import Iterator, Sequence

import av
import numpy as np
import torch.utils.dlpack
from decord import VideoReader, cpu
from decord._ffi.base import DECORDError
from PIL import Image

from pipeline.faces.config import FacesConfig
from pipeline.media import is_image, natural_key  # noqa: F401  (natural_key: public here too)

# decord raises DECORDError (not a RuntimeError) for broken streams and RuntimeError for
# files it cannot open; PIL raises OSError subclasses; a bad window raises ValueError.
DECODE_ERRORS = (DECORDError, RuntimeError, OSError, ValueError)
WINDOW_EPS = 1e-3  # s; container timestamps are float32, windows are inclusive
MEDIA = ("video", "frames", "faces")
_DECODER_DELAY = 32  # packets past the last wanted frame that may still be needed


def list_frame_files(folder: str, exts: Sequence[str]) -> list[str]:
    """Image file names in ``folder``, numerically sorted; hidden files skipped."""
    wanted = tuple(e.lower() for e in exts)
    names = [n for n in os.listdir(folder) if is_image(n, wanted)]
    return sorted(names, key=natural_key)


def window_positions(
    timestamps: np.ndarray, start: float | None, end: float | None, time_unit: str
) -> np.ndarray:
    """Frame indices inside the inclusive window; ``None`` bounds mean the file's ends."""
    n = len(timestamps)
    if time_unit == "frame":
        axis = np.arange(n, dtype=np.float64)
        eps = 1e-6
    elif time_unit == "s":
        axis = np.asarray(timestamps, dtype=np.float64)
        eps = WINDOW_EPS
    else:
        raise ValueError(f"time_unit must be 's' or 'frame', got {time_unit!r}")
    keep = np.ones(n, dtype=bool)
    if start is not None:
        keep &= axis >= start - eps
    if end is not None:
        keep &= axis <= end + eps
    return np.flatnonzero(keep)


def apply_policy(positions: np.ndarray, timestamps: np.ndarray, cfg: FacesConfig) -> np.ndarray:
    """Subsample the window's frame indices by ``cfg.sampling``."""
    if len(positions) == 0 or cfg.sampling == "all":
        return positions
    if cfg.sampling == "every_k":
        return positions[:: cfg.every_k]
    if cfg.sampling == "count":
        if len(positions) <= cfg.num_frames:
            return positions
        # spacing >= 1 between the targets, so rounding never repeats a frame
        picks = np.round(np.linspace(0, len(positions) - 1, cfg.num_frames)).astype(int)
        return positions[picks]
    # "fps": the first frame at or after every tick of a regular clock, so that variable
    # frame rates are resampled on real time, not on frame counts
    # frames rounded onto float32 container timestamps land a hair before their tick: a
    # tolerance (well below the clock's period) keeps a 25 fps source at 25 fps whole
    ts = np.asarray(timestamps, dtype=np.float64)[positions]
    step = 1.0 / cfg.target_fps
    tol = min(WINDOW_EPS, step / 4)
    ticks = ts[0] + step * np.arange(int(math.floor((ts[-1] - ts[0] + tol) / step)) + 1)
    picks = np.unique(np.searchsorted(ts, ticks - tol, side="left"))
    return positions[picks[picks < len(positions)]]


def expected_frames(num_frames: object, fps: object, start: object, end: object,
                    time_unit: object, cfg: FacesConfig) -> int | None:
    """How many frames ``sample_indices`` will keep for a sample, estimated from its probe
    (``num_frames`` of the whole file, average ``fps``) and window without decoding anything;
    None when the probe did not read a frame count. A window in seconds without a known fps
    counts the whole file (an upper bound)."""
    n = _number(num_frames)
    if n is None:
        return None
    n = int(n)
    rate = _number(fps)
    lo, hi = _number(start), _number(end)
    if str(time_unit) == "frame":
        first, last = (lo or 0.0) - 1e-6, (n - 1 if hi is None else hi) + 1e-6
    elif rate is not None and rate > 0:  # the same inclusive tolerance as the window cut
        first = 0.0 if lo is None else (lo - WINDOW_EPS) * rate
        last = n - 1 if hi is None else (hi + WINDOW_EPS) * rate
    else:
        first, last = 0.0, n - 1
    first, last = max(0, math.ceil(first)), min(n - 1, math.floor(last))
    window = max(0, last - first + 1)
    if cfg.sampling == "every_k":
        return -(-window // cfg.every_k)
    if cfg.sampling == "count":
        return min(window, cfg.num_frames)
    if cfg.sampling == "fps" and rate is not None and window:
        step = 1.0 / cfg.target_fps
        span = (window - 1) / rate
        return min(window, int((span + min(WINDOW_EPS, step / 4)) / step) + 1)
    return window


def _number(v: object) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def sample_indices(
    timestamps: np.ndarray, start: float | None, end: float | None, time_unit: str,
    cfg: FacesConfig,
) -> np.ndarray:
    """The frame indices of a sample: its window, then the sampling policy."""
    return apply_policy(window_positions(timestamps, start, end, time_unit), timestamps, cfg)


class FrameSource:
    """Random access to the frames of one medium."""

    timestamps: np.ndarray  # float64 seconds per frame
    # bytes of one decoded frame where every frame has the same size and it is known
    # without decoding (a video); None where frames are read one by one anyway
    frame_bytes: int | None = None

    def __len__(self) -> int:
        return len(self.timestamps)

    def read(self, indices: Sequence[int]) -> Sequence[np.ndarray | str]:
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the open decoder (its file handles and threads); a later ``read``
        opens it again. Files that are read whole per call hold nothing."""

    def chunks(self, indices: Sequence[int], size: int) -> Iterator[Sequence[np.ndarray | str]]:
        """``read`` in chunks of ``size`` frames, so memory stays bounded."""
        for lo in range(0, len(indices), size):
            yield self.read(indices[lo: lo + size])


class VideoSource(FrameSource):
    def __init__(self, path: str, num_threads: int = 0) -> None:
        self.path = path
        self.num_threads = num_threads
        self._vr: VideoReader | None = self._open()
        self.timestamps = self._vr.get_frame_timestamp(np.arange(len(self._vr)))[:, 0].astype(
            np.float64
        )
        # an empty batch has the frames' shape (every frame is scaled to it) and decodes nothing
        empty = self._vr.get_batch([]).shape
        self.frame_shape = (int(empty[1]), int(empty[2]))
        self.frame_bytes = int(np.prod(empty[1:])) or None

    def _open(self) -> VideoReader:
        return VideoReader(self.path, ctx=cpu(0), num_threads=self.num_threads)

    def close(self) -> None:
        self._vr = None  # decord closes the file and stops its threads when the reader goes

    def read(self, indices: Sequence[int]) -> Sequence[np.ndarray | str]:
        idx = [int(i) for i in indices]
        if not idx:
            return []
        if self._vr is None:
            self._vr = self._open()
        try:
            # (N, H, W, 3), frames are its rows: decord's own buffer, handed over through
            # DLPack (``asnumpy`` would copy it: more time, and twice the memory for a moment)
            frames = torch.utils.dlpack.from_dlpack(self._vr.get_batch(idx).to_dlpack()).numpy()
            # After a batch, decord's decoder thread keeps decoding the rest of the file into
            # memory while the caller works (measured: RSS grows with the video's length, to
            # the whole file). Seeking back to the start stops it; the next batch seeks to its
            # frames anyway. Memory then stays flat at any length (docs/benchmarks.md).
            self._vr.seek(0)
            return frames
        except DECORDError:
            # One corrupt frame fails the whole batch and leaves the reader broken. decord's
            # single-frame reads are no way out: its decoder thread runs ahead of the
            # reader, so a neighbour's broken packet can fail a good frame, depending on
            # timing. PyAV decodes synchronously and gives the same pixels (checked in
            # the tests; frames of a stream that changes size are scaled to decord's
            # size as decord scales them), so it tells good frames from bad ones
            # deterministically.
            self._vr = self._open()
            try:
                return read_with_pyav(self.path, idx, self.frame_shape)
            except (av.error.FFmpegError, OSError, ValueError) as err:
                return [f"frame {i}: {_first_line(err)}" for i in idx]


def read_with_pyav(path: str, indices: Sequence[int], shape: tuple[int, int] | None = None
                   ) -> list[np.ndarray | str]:
    """Frames by decord's numbering (packets in presentation order) decoded with PyAV;
    a frame whose packet fails to decode comes back as its error message. With ``shape``
    (h, w), frames of another size (a stream whose size changes) are scaled to it, as
    decord scales them to its first frame's (``_scaled``)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        shown = [(p.pts, p.is_discard) for p in container.demux(stream)
                 if p.pts is not None and p.size]
        # decord numbers the frames the decoder shows: packets before an edit list's start
        # (discarded: no frame) count in its length, and it repeats the frame before there,
        # the last one when read in order
        pts = sorted(p for p, discard in shown if not discard)
        if not pts or any(i >= len(shown) for i in indices):
            return [f"frame {i}: past the {len(pts)} frames PyAV sees" for i in indices]
        at = {i: pts[min(i, len(pts) - 1)] for i in indices}
        wanted = set(at.values())
        frames: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        graphs: dict = {}  # _scaled's filter graphs, per size
        container.seek(min(wanted), stream=stream, backward=True, any_frame=False)
        last, beyond = max(wanted), 0
        for packet in container.demux(stream):
            try:
                # the last packet (size 0) flushes the decoder's delayed frames
                for frame in packet.decode():
                    if frame.pts in wanted:
                        frames[frame.pts] = _rgb(frame, shape, graphs)
            except av.error.FFmpegError as err:
                errors[packet.pts] = _first_line(err)
            # every frame shown up to `last` is in packets decoded up to `last`; allow the
            # decoder's delay, then stop instead of decoding the rest of the file
            if packet.dts is not None and packet.dts > last:
                beyond += 1
            if len(frames) == len(wanted) or beyond > _DECODER_DELAY:
                break
    out: list[np.ndarray | str] = []
    for i in indices:
        p = at[i]
        if p in frames:
            out.append(frames[p])
        else:
            out.append(f"frame {i}: {errors.get(p, 'no picture decoded')}")
    return out


def _rgb(frame: av.VideoFrame, shape: tuple[int, int] | None = None,
         graphs: dict | None = None) -> np.ndarray:
    # decord applies the display rotation: do the same (counterclockwise degrees)
    turns = round(getattr(frame, "rotation", 0) / 90) % 4
    want = shape[::-1] if shape is not None and turns % 2 else shape  # (h, w) before turning
    if want is None or (frame.height, frame.width) == tuple(want):
        img = frame.to_ndarray(format="rgb24")
    else:
        img = _scaled(frame, int(want[0]), int(want[1]), {} if graphs is None else graphs)
    return np.ascontiguousarray(np.rot90(img, turns)) if turns else img


def _scaled(frame: av.VideoFrame, height: int, width: int, graphs: dict) -> np.ndarray:
    """The frame scaled to (height, width) in RGB as decord scales it: its filter graph's
    ``scale`` filter with that filter's default flags in decord's FFmpeg 4 (bilinear, not
    the bicubic of ``reformat``), converting to rgb24 in the same step. Same pixels as
    decord's (checked in the tests), so crops made from them can be made again from
    decord's frames. ``graphs`` keeps one graph per input and output size and format."""
    key = (frame.width, frame.height, frame.format.name, width, height)
    if key not in graphs:
        graph = av.filter.Graph()
        chain = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                  time_base=frame.time_base or fractions.Fraction(1, 25)),
                 graph.add("scale", f"{width}:{height}:flags=bilinear"),
                 graph.add("format", "rgb24"), graph.add("buffersink")]
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()
        graphs[key] = graph
    graphs[key].push(frame)
    return graphs[key].pull().to_ndarray()


class FolderSource(FrameSource):
    def __init__(self, folder: str, exts: Sequence[str], fps: float) -> None:
        names = list_frame_files(folder, exts)
        if not names:
            raise FileNotFoundError(f"no frame images with extensions {tuple(exts)} in {folder}")
        self.files = [os.path.join(folder, n) for n in names]
        self.timestamps = np.arange(len(names), dtype=np.float64) / fps

    def read(self, indices: Sequence[int]) -> list[np.ndarray | str]:
        out: list[np.ndarray | str] = []
        for i in indices:
            try:
                out.append(read_image(self.files[int(i)]))
            except (OSError, ValueError) as err:
                out.append(f"{os.path.basename(self.files[int(i)])}: {err}")
        return out


class ImageSource(FolderSource):
    """One image file: a one-frame sample at time 0."""

    def __init__(self, path: str) -> None:
        self.files = [path]
        self.timestamps = np.zeros(1, dtype=np.float64)
        read_image(path)  # an unreadable file is a decode error of the sample, not a bad frame


def read_image(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def open_source(path: str, media: str, cfg: FacesConfig, num_threads: int = 0) -> FrameSource:
    """Open a local medium: a folder is a frame folder, an image file a one-frame sample,
    any other file a video (``media`` 'video', 'frames' or 'faces')."""
    if media not in MEDIA:
        raise ValueError(f"media must be one of {MEDIA}, got {media!r}")
    if os.path.isdir(path):
        return FolderSource(path, cfg.image_exts, cfg.folder_fps)
    if path.lower().endswith(tuple(e.lower() for e in cfg.image_exts)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such image: {path}")
        return ImageSource(path)
    if media != "video":
        raise ValueError(f"media {media!r} needs a folder or an image file, got {path}")
    return VideoSource(path, num_threads)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
