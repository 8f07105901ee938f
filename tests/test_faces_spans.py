"""Decode spans: the frames of a video that the frame cache (``faces.cache_mb``) keeps
anyway are decoded in one call of several chunks, since every further call seeks back to a
keyframe and decodes from there again. Rows and crops are the same whatever the spans; a
span the decoder raises on is named by its own frames in the error."""

from __future__ import annotations

import numpy as np
import pytest

import pipeline  # noqa: F401  (torchvision fix before facenet-pytorch)
from pipeline.faces.config import FacesConfig
from pipeline.faces.decode import VideoSource
from pipeline.faces.stage import FaceStage
from tests.media import needs_shared_faces, shared_faces_dir
from tests.test_faces_stage import manifest, one_thread  # noqa: F401  (autouse fixture)

BASE = {"sampling": "every_k", "every_k": 2, "detect_size": 160, "chunk_frames": 8}


def _reads(monkeypatch) -> list[list[int]]:
    """The frame indices of every VideoSource.read from now on."""
    calls: list[list[int]] = []
    real = VideoSource.read

    def counted(self, indices):
        calls.append([int(i) for i in indices])
        return real(self, indices)

    monkeypatch.setattr(VideoSource, "read", counted)
    return calls


def _batch():
    shared = shared_faces_dir()
    return manifest({"sample_id": "single", "path": str(shared / "single_face.mp4"),
                     "end": 3.0})


@needs_shared_faces()
@pytest.mark.parametrize("mode", ["every", "keyframe"])
def test_spans_follow_the_cache_and_change_no_row(monkeypatch, mode):
    calls = _reads(monkeypatch)
    frame = VideoSource(str(shared_faces_dir() / "single_face.mp4")).read([0])[0]
    assert VideoSource(str(shared_faces_dir() / "single_face.mp4")).frame_bytes == frame.nbytes
    assert frame.nbytes == 640 * 360 * 3
    outs, sizes = {}, {}
    # a cache of 1.5 frames: a chunk per call, and the crop pass decodes again; of 18.2
    # frames: a span of two chunks (16 frames), then chunks; of them all: one call
    for name, cache_mb in (("chunks", 1), ("partly", 12), ("whole", 256)):
        calls.clear()
        stage = FaceStage(FacesConfig(**BASE, detect_mode=mode, cache_mb=cache_mb),
                          num_threads=1)
        outs[name] = stage(_batch())
        sizes[name] = [len(c) for c in calls]
    n = len(outs["whole"]["status"])
    assert n > 32 and (outs["whole"]["status"] != "no_face").all()
    assert sizes["whole"] == [n]
    assert sizes["partly"][:3] == [16, 8, 8] and sum(sizes["partly"][:1 + (n - 16 + 7) // 8]) == n
    assert sizes["chunks"][: (n + 7) // 8] == [8] * (n // 8) + ([n % 8] if n % 8 else [])
    assert len(sizes["chunks"]) > (n + 7) // 8  # the crop pass read again
    for name in ("chunks", "partly"):
        for column, values in outs["whole"].items():
            if values.dtype.kind == "f":
                np.testing.assert_array_equal(values, outs[name][column], err_msg=column)
            else:
                assert values.tolist() == outs[name][column].tolist(), (name, column)


@needs_shared_faces()
def test_a_failing_span_names_its_frames(monkeypatch):
    real = VideoSource.read

    def broken(self, indices):
        if max(indices) >= 8:
            raise OSError("the disk went away")
        return real(self, indices)

    monkeypatch.setattr(VideoSource, "read", broken)
    out = FaceStage(FacesConfig(**BASE, cache_mb=256), num_threads=1)(_batch())
    n = len(out["status"])
    assert set(out["status"]) == {"decode_error"}
    assert set(out["error"]) == {f"reading frames 0..{n - 1}: OSError: the disk went away"}
