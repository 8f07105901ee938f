"""Per-sample checks at ingest: does the media exist, is it empty, can its header be read,
does its window hold a frame.

In: one input sample row (path, media; window). Out: the probe columns (media resolved,
num_frames, fps, width, height, size_bytes) plus ``status``/``error``. Never raises for a
bad file: ``missing``, ``empty_file``, ``unreadable`` and ``empty_window`` are rows, so the
other samples go on.
"""

from __future__ import annotations

import math

from pipeline import io
from pipeline.media import is_image, natural_key


def list_images(url: str) -> list[str]:
    """Image file names of a folder, in the face stage's frame order."""
    return sorted((n for n in io.listdir(url) if is_image(n)), key=natural_key)


def probe(path: str | None, media: str, read_header: bool = True) -> dict:
    out = {"media": media, "num_frames": None, "fps": None, "width": None, "height": None,
           "size_bytes": None, "status": "ok", "error": None}
    if path is None:
        return {**out, "status": "missing", "error": "path is empty"}
    try:
        if not io.exists(path):
            return {**out, "status": "missing", "error": f"{path} does not exist"}
        folder = io.isdir(path)
        if media == "auto":
            media = "frames" if folder or is_image(path) else "video"
            out["media"] = media
        if folder:
            return {**out, **_probe_folder(path, read_header)}
        if media in ("frames", "faces") and not is_image(path):
            return {**out, "status": "unreadable",
                    "error": f"{path} is a file, but media {media!r} needs a folder of images"}
        out["size_bytes"] = io.size(path)
        if out["size_bytes"] == 0:
            return {**out, "status": "empty_file", "error": f"{path} is a zero-byte file"}
        if not read_header:
            return out
        if is_image(path):
            return {**out, **_image_header(path), "num_frames": 1}
        return {**out, **_video_header(path)}
    except (OSError, ValueError) as exc:
        return {**out, "status": "unreadable", "error": f"{path}: {type(exc).__name__}: {exc}"}


def _probe_folder(path: str, read_header: bool) -> dict:
    names = list_images(path)
    if not names:
        return {"status": "empty_file", "error": f"{path} is a folder with no images"}
    out = {"num_frames": len(names)}
    if read_header:
        out.update(_image_header(io.join(path, names[0])))
    return out


def _image_header(url: str) -> dict:
    from PIL import Image, UnidentifiedImageError

    try:
        with io.local_path(url) as local, Image.open(local) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError) as exc:
        return {"status": "unreadable", "error": f"{url}: cannot read image header: {exc}"}
    return {"width": width, "height": height}


def _video_header(url: str) -> dict:
    import decord

    try:
        with io.local_path(url) as local:
            vr = decord.VideoReader(local, num_threads=1)
            n = len(vr)
            h, w = vr[0].shape[:2] if n else (None, None)
            fps = float(vr.get_avg_fps())
    except (decord._ffi.base.DECORDError, RuntimeError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"status": "unreadable", "error": f"{url}: cannot open video: {msg}"}
    if n == 0:
        return {"status": "unreadable", "error": f"{url}: video has no frames"}
    return {"num_frames": n, "fps": fps, "width": w, "height": h}


def window_problem(path: str, start: float | None, end: float | None, time_unit: str,
                   num_frames: int | None) -> str | None:
    """Why a frame window holds no frame of a sample with ``num_frames`` frames (None: it
    holds one or more, or that cannot be known here). Frame windows are 0-based positions,
    inclusive at both ends, so ``start == end`` is one frame; a window that reaches past the
    last frame keeps the frames it has. Windows in seconds are left to the face stage, which
    reads the container's timestamps."""
    if time_unit != "frame" or num_frames is None:
        return None
    first, last = _number(start), _number(end)
    if first is not None and first > num_frames - 1:
        shown = f"{first:g}..{'end' if last is None else f'{last:g}'}"
        return (f"{path}: frame window {shown} starts after the last frame "
                f"(the sample has {num_frames} frame(s), positions 0..{num_frames - 1})")
    if last is not None and last < 0:
        return f"{path}: frame window ends at {last:g}, before the first frame"
    return None


def _number(value: float | None) -> float | None:
    """A window bound as a float; None or NaN (the file's own start or end) as None."""
    return None if value is None or math.isnan(value) else float(value)
