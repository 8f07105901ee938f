"""Keyframe detection (faces.detect_mode='keyframe'): MTCNN on every keyframe_every-th
sampled frame and the last, the face carried between agreeing keyframes (status
``carried``), the frames between disagreeing ones detected. Checked against per-frame
detection with real MTCNN on the shared clips and on a built clip where the face jumps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline  # noqa: F401  (torchvision fix before facenet-pytorch)
from pipeline.faces.config import FacesConfig
from pipeline.faces.detect import FrameFaces
from pipeline.faces.shard import WITH_FACE, config_of_fingerprint, fingerprint_config
from pipeline.faces.stage import FaceStage
from pipeline.faces.track import CARRIED, FILLED, NONE, OK, agree, follow, iou, keyframes
from tests.media import needs_shared_faces, shared_faces_dir
from tests.test_faces_stage import manifest, rows_of

SHARED = shared_faces_dir()
needs_shared = needs_shared_faces()
# small and sparse enough for 2 shared cores: every 2nd frame, detection at 160 px
BASE = {"sampling": "every_k", "every_k": 2, "detect_size": 160}
EVERY = FacesConfig().keyframe_every


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _faces(*boxes: tuple[float, float, float, float]) -> FrameFaces:
    b = np.array(boxes, np.float32).reshape(-1, 4)
    marks = np.repeat(b[:, None, :2], 5, axis=1)
    return FrameFaces(b, np.full(len(b), 0.99, np.float32), marks)


def test_keyframes_are_every_kth_and_the_last():
    assert keyframes(11, 5).tolist() == [0, 5, 10]
    assert keyframes(13, 5).tolist() == [0, 5, 10, 12]
    assert keyframes(1, 5).tolist() == [0]
    assert keyframes(0, 5).tolist() == []


def test_agree_needs_the_same_faces_at_the_same_places():
    a = _faces((0, 0, 100, 100))
    assert agree(a, _faces((5, 5, 105, 105)), 0.5)
    assert not agree(a, _faces((80, 80, 180, 180)), 0.5)  # jumped
    assert not agree(a, FrameFaces.empty(), 0.5)  # left
    assert not agree(a, _faces((0, 0, 100, 100), (200, 0, 300, 100)), 0.5)  # a second face
    assert not agree(a, None, 0.5)  # an undecodable keyframe
    assert agree(FrameFaces.empty(), FrameFaces.empty(), 0.5)
    two = _faces((0, 0, 100, 100), (200, 0, 300, 100))
    assert agree(two, _faces((202, 0, 302, 100), (2, 0, 102, 100)), 0.5)


def test_follow_carries_skipped_frames_inside_the_track_only():
    cfg = FacesConfig(max_gap=1, smooth=1)
    box = (0, 0, 100, 100)
    dets = [_faces(box), None, None, None, _faces((40, 0, 140, 100)), FrameFaces.empty(),
            None, None]
    skipped = np.array([0, 1, 1, 1, 0, 0, 1, 0], bool)  # frame 7 undecodable
    track = follow(dets, np.arange(8) / 10.0, cfg, skipped)
    # 3 skipped frames between two detections are carried although max_gap is 1
    assert track.state.tolist() == [OK, CARRIED, CARRIED, CARRIED, OK, NONE, NONE, NONE]
    assert np.allclose(track.boxes[2], (20, 0, 120, 100))
    assert np.isnan(track.probs[1:4]).all() and np.isfinite(track.landmarks[1:4]).all()
    # missed (detected, no face) frames still count towards max_gap; skipped ones do not
    dets = [_faces(box), FrameFaces.empty(), None, _faces(box)]
    state = follow(dets, np.arange(4) / 10.0, cfg, np.array([0, 0, 1, 0], bool)).state
    assert state.tolist() == [OK, FILLED, CARRIED, OK]
    dets = [_faces(box), FrameFaces.empty(), FrameFaces.empty(), _faces(box)]
    assert follow(dets, np.arange(4) / 10.0, cfg).state.tolist() == [OK, NONE, NONE, OK]


def test_config_and_fingerprint():
    with pytest.raises(ValueError, match=r"faces\.detect_mode"):
        FacesConfig(detect_mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"faces\.keyframe_every"):
        FacesConfig(keyframe_every=0)
    with pytest.raises(ValueError, match=r"faces\.keyframe_iou .*0\.1"):
        FacesConfig(keyframe_iou=0.1)
    every = fingerprint_config(FacesConfig(detect_mode="every"))
    # per-frame mode: keyframe settings change nothing, and fingerprints made before the
    # option existed stay valid
    assert every == fingerprint_config(FacesConfig(detect_mode="every", keyframe_every=9,
                                                   keyframe_iou=0.8, keyframe_shrink=False))
    assert "detect_mode" not in every["faces"]
    kf = fingerprint_config(FacesConfig())  # the default: keyframes, every 8th frame
    assert kf != every and kf["faces"]["detect_mode"] == "keyframe"
    assert kf["faces"]["keyframe_every"] == 8 and kf["faces"]["keyframe_shrink"] is True
    assert kf != fingerprint_config(FacesConfig(keyframe_every=3))
    assert kf != fingerprint_config(FacesConfig(keyframe_shrink=False))
    # a per-frame fingerprint made before the setting existed reads back as per-frame
    assert config_of_fingerprint(every["faces"]).detect_mode == "every"
    assert "carried" in WITH_FACE


@pytest.fixture(scope="module")
def shared_runs():
    """Per-frame and keyframe runs over one batch of the shared clips (windows kept short)."""
    if not SHARED.is_dir():
        pytest.skip("shared test media absent")
    batch = manifest(
        {"sample_id": "single", "path": str(SHARED / "single_face.mp4"), "end": 1.6},
        {"sample_id": "leaves", "path": str(SHARED / "face_noface.mov"), "start": 1.6,
         "end": 3.6},
        {"sample_id": "enters", "path": str(SHARED / "noface_face.mov"), "start": 2.6,
         "end": 4.6},
    )
    every = FaceStage(FacesConfig(**BASE, detect_mode="every"), num_threads=1)(batch)
    kf = FaceStage(FacesConfig(**BASE), num_threads=1)(batch)  # the default keyframe mode
    return every, kf


def _face_frames(rows: dict[str, np.ndarray]) -> np.ndarray:
    return np.flatnonzero(np.isin(rows["status"], WITH_FACE))


@needs_shared
@pytest.mark.parametrize("sample", ["leaves", "enters"])
def test_face_that_leaves_or_enters_is_found_at_its_frame(shared_runs, sample):
    every, kf = (rows_of(o, sample) for o in shared_runs)
    want, got = _face_frames(every), _face_frames(kf)
    assert len(want) > 3 and len(want) < len(every["status"]) - 3  # the switch is inside
    edge = (want.max(), got.max()) if sample == "leaves" else (want.min(), got.min())
    # the frames between the keyframes around the switch are detected again: within one
    # keyframe interval (in practice the very frame)
    assert abs(int(edge[0]) - int(edge[1])) < EVERY
    # no frame between the keyframes around the switch is carried
    keys = keyframes(len(kf["status"]), EVERY)
    last_face = int(edge[0]) if sample == "leaves" else int(edge[0]) - 1
    a, b = keys[keys <= last_face].max(), keys[keys > last_face].min()
    assert b - a > 1 and "carried" not in kf["status"][a: b + 1].tolist()


@needs_shared
def test_carried_frames_are_marked_and_cropped(shared_runs):
    every, kf = shared_runs
    rows = rows_of(kf, "single")
    n = len(rows["status"])
    keys = keyframes(n, EVERY)
    carried = rows["status"] == "carried"
    assert carried.sum() == n - len(keys)  # one steady face: only keyframes detected
    assert (rows["status"][keys] == "ok").all()
    assert np.isnan(rows["prob"][carried]).all() and np.isfinite(rows["prob"][keys]).all()
    assert np.isfinite(rows["box"][carried]).all()
    assert np.isfinite(rows["landmarks"][carried]).all()
    assert (rows["crop_pixels"][carried].reshape(carried.sum(), -1).max(axis=1) > 0).all()
    assert "carried" not in every["status"].tolist()


@needs_shared
def test_keyframe_boxes_match_per_frame_boxes_on_one_face(shared_runs):
    every, kf = (rows_of(o, "single") for o in shared_runs)
    assert (every["status"] == "ok").all() and np.isin(kf["status"], WITH_FACE).all()
    overlap = [iou(a, b)[0, 0] for a, b in zip(every["box"], kf["box"], strict=True)]
    assert np.mean(overlap) >= 0.9 and min(overlap) > 0.75


@needs_shared
def test_a_face_that_jumps_between_keyframes_is_detected_again(tmp_path):
    img = Image.open(SHARED / "single_face.jpg").convert("RGB").resize((150, 147))
    folder = tmp_path / "jump"
    folder.mkdir()
    for t in range(11):  # keyframes 0, 5, 10; the face jumps right at frame 7
        canvas = Image.new("RGB", (400, 200), (128, 128, 128))
        canvas.paste(img, (10 if t < 7 else 240, 20))
        canvas.save(folder / f"image_{t}.png")
    batch = manifest({"sample_id": "jump", "path": str(folder), "media": "frames"})
    every = FaceStage(FacesConfig(detect_size=200, detect_mode="every"), num_threads=1)(batch)
    kf = FaceStage(FacesConfig(detect_size=200, keyframe_every=5), num_threads=1)(batch)
    assert every["status"].tolist() == ["ok"] * 7 + ["no_face"] * 4  # the longer track wins
    # 1..4 lie between agreeing keyframes; 6..9 between the disagreeing 5 and 10
    assert kf["status"].tolist() == ["ok"] + ["carried"] * 4 + ["ok"] * 2 + ["no_face"] * 4
    assert np.abs(kf["box"][[0, 5, 6]] - every["box"][[0, 5, 6]]).max() < 3
