"""Tiny real media for tests: videos written with PyAV, small frame folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the checkout (or $AUTT_SHARED_DATA); None when absent."""
    env = os.environ.get("AUTT_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


def shared_faces_dir() -> Path:
    """The shared face clips folder (may not exist: tests skip on ``.is_dir()``)."""
    root = shared_data_dir()
    return (root / "faces") if root else REPO.parent / "shared" / "data" / "faces"


def needs_shared_faces():
    """Skip marker for tests that read ../shared/data/faces (absent in a user's clone)."""
    import pytest

    return pytest.mark.skipif(not shared_faces_dir().is_dir(), reason="shared test media absent")


def write_video(path: Path, n_frames: int = 8, size: int = 64, fps: int = 10,
                seed: int = 0) -> Path:
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            img = np.full((size, size, 3), 40 + 20 * i, dtype=np.uint8)
            img[: size // 2] = rng.integers(0, 255, (size // 2, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder: Path, n: int = 4, size: int = 32, name: str = "frame_{i}.png") -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((size, size, 3), 30 * i % 255, dtype=np.uint8)
        Image.fromarray(img).save(folder / name.format(i=i))
    return folder


def face_frames(n: int, size: int = 192) -> np.ndarray:
    """(n, size, size, 3) uint8: a real face (scikit-image's astronaut) panning slowly, which
    MTCNN finds in every frame at the default settings."""
    from PIL import Image

    from pipeline.demo.face import astronaut

    img = astronaut()
    return np.stack([np.asarray(Image.fromarray(img[0:320, 50 + 2 * k: 370 + 2 * k]).resize(
        (size, size), Image.BICUBIC)) for k in range(n)])


def write_face_video(path: Path, n_frames: int = 8, size: int = 192, fps: int = 10) -> Path:
    """An h264 clip of ``face_frames`` written with the demo's encoder."""
    from pipeline.demo.synth import encode_mp4

    path.write_bytes(encode_mp4(face_frames(n_frames, size), fps))
    return path
