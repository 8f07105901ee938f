"""A sample that the detector or the decoder cannot handle costs that sample alone: its
rows say why, the rest of the batch and of the shard is written (issue 8, item 3)."""

from __future__ import annotations

import numpy as np
import pytest

import schemas
from jobs.cli import main as cli
from pipeline.faces.config import FacesConfig
from pipeline.faces.decode import VideoSource
from pipeline.faces.detect import DetectError, FaceDetector
from pipeline.faces.shard import WITH_FACE
from pipeline.faces.stage import FaceStage
from pipeline.workspace import Workspace
from tests.media import write_face_video, write_video
from tests.test_faces_stage import COLUMNS, one_thread, rows_of  # noqa: F401  (autouse fixture)

TINY = ["embed.model=autt-tiny", "embed.weights=random"]
EMB = "embeddings/autt-tiny__random-s0"
FACE = set(WITH_FACE)  # detected, or carried between keyframes (the default mode)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    return {"face": write_face_video(folder / "face.mp4", n_frames=6),
            "face2": write_face_video(folder / "face2.mp4", n_frames=4),
            "tiny": write_video(folder / "tiny.mp4", n_frames=5, size=20),
            "dark": _dark_video(folder / "dark.mp4")}


def _dark_video(path):
    from pipeline.demo.synth import encode_mp4

    path.write_bytes(encode_mp4(np.zeros((4, 192, 192, 3), np.uint8), fps=10))
    return path


def batch(**paths) -> dict[str, np.ndarray]:
    rows = [{"sample_id": k, "path": str(p), "media": "video", "time_unit": "s",
             "shard_id": "s0", "subject_id": "x"} for k, p in paths.items()]
    return {c: np.array([r.get(c) for r in rows], dtype=object) for c in COLUMNS}


def test_tiny_video_beside_a_face_video_in_one_fused_shard(media, tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("video_id,subject_id,label,path\n"
                        f"face,s1,neutral,{media['face']}\ntiny,s2,pain,{media['tiny']}\n")
    out = tmp_path / "out"
    common = ["--out", str(out), "--executor", "local", "--quiet", *TINY]
    assert cli(["ingest", "--manifest", str(manifest), "--classes", "neutral,pain",
                "ingest.shard_size=2", *common]) == 0
    ws = Workspace(str(out))
    assert len(ws.markers("manifest")) == 1  # both samples in ONE shard
    assert cli(["embed", "--fused", *common]) == 0
    faces = ws.read_table("faces", schemas.get("faces")).to_pandas()
    face, tiny = faces[faces.sample_id == "face"], faces[faces.sample_id == "tiny"]
    assert len(face) == 6 and set(face.status) <= FACE
    assert len(tiny) == 5 and set(tiny.status) == {"detect_error"}
    assert list(tiny.frame_index) == list(range(5))
    assert all("20x20 px" in e and "smallest pyramid level" in e for e in tiny.error)
    emb = ws.read_table(EMB).to_pandas()
    assert sorted(zip(emb.sample_id, emb.frame_index)) == [("face", i) for i in range(6)]
    assert np.isfinite(np.stack(emb.embedding.to_numpy()).astype(np.float32)).all()
    marker = next(iter(ws.markers("faces").values()))  # the shard committed
    counts = marker["status_counts"]
    assert set(counts) <= FACE | {"detect_error"} and counts.pop("detect_error") == 5
    assert sum(counts.values()) == 6
    errors = ws.read_side_table("errors", "faces", schemas.get("errors")).to_pandas()
    assert set(errors.sample_id) == {"tiny"} and set(errors.status) == {"detect_error"}
    capsys.readouterr()
    assert cli(["embed", "--fused", *common]) == 0  # a rerun does no work
    assert "faces+embed: 0 shard(s) done, 1 already done" in capsys.readouterr().out


def test_a_failed_pooled_detection_is_retried_sample_by_sample(media, monkeypatch):
    real = FaceDetector.detect_small

    def fussy(self, small, src_hw, least=None):  # "MTCNN" refuses calls holding black frames
        if (small.reshape(len(small), -1).float().mean(1) < 1).any():
            raise DetectError("cannot run on black frames")
        return real(self, small, src_hw, least)

    monkeypatch.setattr(FaceDetector, "detect_small", fussy)
    out = FaceStage(FacesConfig(), num_threads=1)(batch(face=media["face"], dark=media["dark"],
                                                        face2=media["face2"]))
    assert set(rows_of(out, "face")["status"]) <= FACE
    assert set(rows_of(out, "face2")["status"]) <= FACE
    dark = rows_of(out, "dark")
    assert list(dark["status"]) == ["detect_error"] * 4
    assert all(e == "cannot run on black frames" for e in dark["error"])
    assert dark["crop_pixels"].max() == 0 and np.isnan(dark["box"]).all()


def test_a_bug_in_our_own_code_is_not_blamed_on_the_media(media, monkeypatch):
    def broken(self, small, src_hw, least=None):
        raise TypeError("a bug in the detector wrapper")

    monkeypatch.setattr(FaceDetector, "detect_small", broken)
    with pytest.raises(TypeError, match="a bug"):
        FaceStage(FacesConfig(), num_threads=1)(batch(face=media["face"]))


def test_a_decoder_failing_mid_sample_costs_that_sample(media, monkeypatch):
    real = VideoSource.read

    def flaky(self, indices):
        if self.path.endswith("face2.mp4"):
            raise OSError("the disk went away")
        return real(self, indices)

    monkeypatch.setattr(VideoSource, "read", flaky)
    out = FaceStage(FacesConfig(), num_threads=1)(batch(face=media["face"], face2=media["face2"]))
    assert set(rows_of(out, "face")["status"]) <= FACE
    bad = rows_of(out, "face2")
    assert list(bad["status"]) == ["decode_error"] * 4 and list(bad["frame_index"]) == [0, 1, 2, 3]
    assert all("OSError: the disk went away" in e for e in bad["error"])


def test_a_decoder_failing_in_the_crop_pass_costs_that_sample(media, monkeypatch):
    real = VideoSource.read
    calls = {"n": 0}

    def flaky_later(self, indices):
        if self.path.endswith("face2.mp4"):
            calls["n"] += 1
            if calls["n"] > 1:  # the first pass reads, the re-decode for crops fails
                raise RuntimeError("decoder lost its state")
        return real(self, indices)

    monkeypatch.setattr(VideoSource, "read", flaky_later)
    stage = FaceStage(FacesConfig(cache_mb=0), num_threads=1)
    got: list[np.ndarray] = []
    out = stage.run(batch(face=media["face"], face2=media["face2"]),
                    lambda pos, crops: got.append(pos))
    assert set(rows_of(out, "face")["status"]) <= FACE
    assert set(rows_of(out, "face2")["status"]) == {"decode_error"}
    assert np.concatenate(got).tolist() == list(range(6))  # crops of face only


def test_an_undecodable_frame_is_read_once_and_keeps_its_own_error(media, monkeypatch):
    """A frame the first pass could not decode is neither decoded again for detection nor
    for its crop: its row says why it failed, not 're-decode failed'."""
    real = VideoSource.read
    asked: list[int] = []

    def one_bad(self, indices):
        asked.extend(int(i) for i in indices)
        return [f"frame {i}: broken packet" if int(i) == 2 else f
                for i, f in zip(indices, real(self, indices), strict=True)]

    monkeypatch.setattr(VideoSource, "read", one_bad)
    for prefetch in ("off", "on"):
        asked.clear()
        out = FaceStage(FacesConfig(cache_mb=0, prefetch=prefetch), num_threads=1)(
            batch(face=media["face"]))
        rows = rows_of(out, "face")
        assert rows["status"][2] == "bad_frame" and rows["error"][2] == "frame 2: broken packet"
        assert asked.count(2) == 1 and set(rows["status"][[0, 1, 3, 4, 5]]) <= FACE


def test_decoder_errors_leave_out_the_decoders_clock():
    """decord's messages start with the wall-clock time: rows of two runs would differ."""
    from decord._ffi.base import DECORDError

    from pipeline.faces.sample import describe

    err = DECORDError("[17:20:40] /github/workspace/src/video/video_reader.cc:486: "
                      "Error: av_read_frame failed with 1094995529")
    assert describe(err) == "DECORDError: Error: av_read_frame failed with 1094995529"
    assert describe(OSError("[12:00:00] is data")) == "OSError: [12:00:00] is data"
