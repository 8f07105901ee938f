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


def _recorded(monkeypatch, owner, name: str) -> list[list[int]]:
    """The frame indices (second argument) of every call of ``owner.name`` from now on."""
    calls: list[list[int]] = []
    real = getattr(owner, name)

    def counted(first, indices, *rest):
        calls.append([int(i) for i in indices])
        return real(first, indices, *rest)

    monkeypatch.setattr(owner, name, counted)
    return calls


def _reads(monkeypatch) -> list[list[int]]:
    """The frame indices of every VideoSource.read from now on."""
    return _recorded(monkeypatch, VideoSource, "read")


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


def test_a_corrupt_frame_in_a_span_falls_back_for_its_chunk_only(tmp_path, monkeypatch):
    # a span decord raises on is decoded by PyAV (VideoSource.read), whose frames can differ
    # from decord's (a stream that changes size mid-way: PyAV keeps each size, decord scales
    # to the first); the span is read again by chunks, so that PyAV decodes the bad frame's
    # chunk alone, as without spans, and the rows do not depend on cache_mb
    from pipeline.faces import decode
    from tests.test_faces_stage import broken_frame_video

    _, bad = broken_frame_video(tmp_path)
    fallbacks = _recorded(monkeypatch, decode, "read_with_pyav")
    calls = _reads(monkeypatch)
    outs = {}
    for cache_mb in (256, 0):
        fallbacks.clear()
        calls.clear()
        cfg = FacesConfig(chunk_frames=6, cache_mb=cache_mb, detect_mode="every")
        outs[cache_mb] = FaceStage(cfg, num_threads=1)(manifest({"sample_id": "v",
                                                                 "path": str(bad)}))
        if cache_mb:
            # the span, which PyAV decodes whole, then its chunks again: the frames kept
            # come from these, PyAV's from the bad frame's chunk alone
            assert calls[:4] == [list(range(16)), list(range(6)), list(range(6, 12)),
                                 list(range(12, 16))]
            assert fallbacks == [list(range(16)), list(range(6, 12))]
    assert list(outs[256]["status"]) == ["ok"] * 8 + ["bad_frame"] + ["ok"] * 7
    for column, values in outs[256].items():
        if values.dtype.kind == "f":
            np.testing.assert_array_equal(values, outs[0][column], err_msg=column)
        else:
            assert values.tolist() == outs[0][column].tolist(), column
