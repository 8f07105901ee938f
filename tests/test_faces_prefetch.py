"""Decoding ahead in a thread (faces.prefetch): the same items in the same order, errors
raised where they happened, no thread left behind; the face stage's rows and crops are the
same with it as without, failures included."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import pipeline  # noqa: F401  (torchvision fix before facenet-pytorch)
from pipeline.faces.config import FacesConfig
from pipeline.faces.decode import VideoSource
from pipeline.faces.prefetch import prefetched
from pipeline.faces.stage import FaceStage
from tests.media import needs_shared_faces, shared_faces_dir
from tests.test_faces_stage import manifest, one_thread  # noqa: F401  (autouse fixture)


def _threads() -> int:
    return sum(t.name == "autt-prefetch" for t in threading.enumerate())


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetched_keeps_order_and_raises_in_place(depth):
    with prefetched(range(20), depth) as items:
        assert list(items) == list(range(20))

    def broken():
        yield from range(3)
        raise KeyError("bad item")

    seen = []
    with pytest.raises(KeyError, match="bad item"), prefetched(broken(), depth) as items:
        for item in items:
            seen.append(item)
    assert seen == [0, 1, 2] and _threads() == 0


def test_leaving_early_stops_the_thread():
    produced = []

    def endless():
        k = 0
        while True:
            produced.append(k)
            yield k
            k += 1

    with prefetched(endless(), 2) as items:
        for item in items:
            if item == 5:
                break
    assert _threads() == 0 and len(produced) <= 5 + 1 + 2 + 1  # ahead by the depth at most
    with pytest.raises(RuntimeError, match="caller"), prefetched(endless(), 2) as items:
        next(items)
        raise RuntimeError("the caller failed")
    assert _threads() == 0


@needs_shared_faces()
def test_stage_rows_and_crops_are_the_same_with_prefetch(tmp_path, monkeypatch):
    shared = shared_faces_dir()
    data = (shared / "single_face.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "flaky.mp4").write_bytes(data)
    batch = manifest(
        {"sample_id": "single", "path": str(shared / "single_face.mp4"), "end": 1.5},
        {"sample_id": "truncated", "path": str(tmp_path / "truncated.mp4")},
        {"sample_id": "flaky", "path": str(tmp_path / "flaky.mp4"), "end": 1.5},
        {"sample_id": "leaves", "path": str(shared / "face_noface.mov"), "start": 2.0,
         "end": 3.0},
    )
    real = VideoSource.read

    def flaky(self, indices):  # the decoder gives up on the second chunk of one file
        if self.path.endswith("flaky.mp4") and min(indices) >= 8:
            raise OSError("the disk went away")
        return real(self, indices)

    monkeypatch.setattr(VideoSource, "read", flaky)
    base = {"sampling": "every_k", "every_k": 2, "detect_size": 160, "chunk_frames": 8,
            "cache_mb": 1}
    plain = FaceStage(FacesConfig(**base, prefetch="off"), num_threads=1)(batch)
    ahead = FaceStage(FacesConfig(**base, prefetch="on"), num_threads=1)(batch)
    assert set(plain) == set(ahead)
    for column, values in plain.items():
        if values.dtype.kind == "f":
            np.testing.assert_array_equal(values, ahead[column], err_msg=column)
        else:
            assert values.tolist() == ahead[column].tolist(), column
    flaky_rows = plain["status"][plain["sample_id"] == "flaky"]
    assert set(flaky_rows) == {"decode_error"} and _threads() == 0
    assert "reading frames 8..15: OSError: the disk went away" in set(plain["error"])


@needs_shared_faces()
@pytest.mark.parametrize("prefetch", ["off", "on"])
def test_a_shard_of_many_samples_holds_few_decoders_open(monkeypatch, prefetch):
    """Each sample's decoder is let go once its frames are read (and after re-reads for
    crops beyond the frame cache), so the open file handles do not grow with the shard."""
    import weakref

    alive: weakref.WeakSet = weakref.WeakSet()
    most = [0]
    real = VideoSource._open

    def counted(self):
        reader = real(self)
        alive.add(reader)
        most[0] = max(most[0], len(alive))
        return reader

    monkeypatch.setattr(VideoSource, "_open", counted)
    clip = str(shared_faces_dir() / "single_face.mp4")
    batch = manifest(*({"sample_id": f"w{k}", "path": clip, "start": 0.1 * k, "end": 0.1 * k + 0.5}
                       for k in range(10)))
    cfg = FacesConfig(sampling="every_k", every_k=2, detect_size=160, cache_mb=0,
                      prefetch=prefetch)
    out = FaceStage(cfg, num_threads=1)(batch)
    assert set(out["status"]) <= {"ok", "carried", "filled"} and len(set(out["sample_id"])) == 10
    assert most[0] <= 3, most[0]  # one being read, one read ahead, one re-read for crops


@needs_shared_faces()
@pytest.mark.parametrize("prefetch", ["off", "on"])
def test_the_stage_counts_the_time_it_waits_for_frames(monkeypatch, prefetch):
    """``seconds['wait']``: without prefetch, all of the first pass's reading; with it, at
    most that (what detection hid is not waited for). Reads are slowed by a known sleep."""
    import time

    real = VideoSource.read
    slept = [0.0]

    def slow(self, indices):
        time.sleep(0.05)
        slept[0] += 0.05
        return real(self, indices)

    monkeypatch.setattr(VideoSource, "read", slow)
    batch = manifest({"sample_id": "single", "path": str(shared_faces_dir() / "single_face.mp4"),
                      "end": 1.0})
    stage = FaceStage(FacesConfig(detect_size=160, chunk_frames=8, cache_mb=1,
                                  prefetch=prefetch), num_threads=1)
    t0 = time.perf_counter()
    stage(batch)
    took = time.perf_counter() - t0
    reads = int(round(slept[0] / 0.05))
    assert reads >= 4 and stage.prefetching == (prefetch == "on")
    assert stage.seconds["wait"] <= took
    if prefetch == "off":  # the first pass's reads (not the crop pass's re-reads) waited on
        assert stage.seconds["wait"] >= 0.05 * 4
