"""Keyframe mode (the default) on what happens between keyframes: a face that leaves and
comes back, or is covered, between two agreeing keyframes (the thumbnails give it away,
``track.hidden_change``), a second face that enters, a hand over the face in a real clip;
and the smaller detection size of later keyframes (``detect.keyframe_detection``). Each
is checked against per-frame detection with real MTCNN."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pipeline  # noqa: F401  (torchvision fix before facenet-pytorch)
from pipeline.faces.config import FacesConfig
from pipeline.faces.detect import KEY_FACE_PX, FrameFaces, detect_shape, keyframe_detection
from pipeline.faces.shard import WITH_FACE
from pipeline.faces.stage import FaceStage
from pipeline.faces.track import hidden_change, iou
from tests.media import needs_shared_faces, shared_faces_dir
from tests.test_faces_stage import manifest, one_thread  # noqa: F401  (autouse fixture)

SHARED = shared_faces_dir()
needs_shared = needs_shared_faces()


def test_hidden_change_needs_a_frame_unlike_both_keyframes():
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (20, 20)).astype(np.uint8)
    drift = [np.clip(base.astype(int) + k, 0, 255).astype(np.uint8) for k in range(9)]
    assert not hidden_change(drift, 8.0)  # a steady face that slowly brightens
    gone = list(drift)
    gone[4] = np.full_like(base, 128)  # the face replaced by background on one frame
    assert hidden_change(gone, 8.0)
    assert not hidden_change([drift[0], drift[8]], 8.0)  # nothing between them


def test_later_keyframes_are_detected_at_the_size_that_shows_the_face():
    face = FrameFaces(np.array([[100, 50, 300, 260]], np.float32), np.ones(1, np.float32),
                      np.zeros((1, 5, 2), np.float32))
    shape, least = keyframe_detection(face, (720, 1280), 640)
    # the 200 px face at 64 px: 1280 * 64 / 200 = 410 -> 416, a multiple of 32
    assert shape == detect_shape(720, 1280, 416) and least == pytest.approx(0.5 * 200 * 234 / 720)
    assert keyframe_detection(FrameFaces.empty(), (720, 1280), 640) == ((360, 640), None)
    big = FrameFaces(np.array([[0, 0, 700, 700]], np.float32), np.ones(1, np.float32),
                     np.zeros((1, 5, 2), np.float32))
    shape, least = keyframe_detection(big, (720, 1280), 640)
    assert min(shape) >= KEY_FACE_PX and least <= min(shape)  # never below MTCNN's pyramid
    small = FrameFaces(np.array([[0, 0, 40, 40]], np.float32), np.ones(1, np.float32),
                       np.zeros((1, 5, 2), np.float32))
    assert keyframe_detection(small, (720, 1280), 640) == ((360, 640), None)  # never larger


def _clip(folder, frames: list[list[tuple[int, int]]]):
    """A folder of 400x200 frames with the shared face photo (150 px) pasted at the given
    positions on each frame."""
    img = Image.open(SHARED / "single_face.jpg").convert("RGB").resize((150, 147))
    folder.mkdir()
    for t, places in enumerate(frames):
        canvas = Image.new("RGB", (400, 200), (128, 128, 128))
        for place in places:
            canvas.paste(img, place)
        canvas.save(folder / f"image_{t}.png")
    return manifest({"sample_id": folder.name, "path": str(folder), "media": "frames"})


def _both_modes(batch) -> tuple[dict, dict]:
    every = FaceStage(FacesConfig(detect_size=200, detect_mode="every"), num_threads=1)(batch)
    keyed = FaceStage(FacesConfig(detect_size=200), num_threads=1)(batch)  # keyframes 0, 8, ..
    return every, keyed


@needs_shared
def test_a_face_that_leaves_and_comes_back_between_agreeing_keyframes(tmp_path):
    left = (20, 25)
    batch = _clip(tmp_path / "away", [[left]] * 3 + [[]] * 2 + [[left]] * 4)  # keyframes 0, 8
    every, keyed = _both_modes(batch)
    assert every["status"].tolist() == ["ok"] * 3 + ["filled"] * 2 + ["ok"] * 4
    # keyframes 0 and 8 agree, but the thumbnails show the absence: 1..7 are detected too
    assert keyed["status"].tolist() == every["status"].tolist()
    assert "carried" not in keyed["status"].tolist()


@needs_shared
def test_a_second_face_that_enters_is_seen(tmp_path):
    left, right = (20, 25), (230, 25)
    batch = _clip(tmp_path / "second", [[left]] * 5 + [[left, right]] * 4)
    every, keyed = _both_modes(batch)
    # keyframes 0 (one face) and 8 (two) disagree: every frame between is detected
    assert keyed["status"].tolist() == every["status"].tolist()
    assert "carried" not in keyed["status"].tolist()
    np.testing.assert_allclose(keyed["box"], every["box"], atol=3)


@needs_shared
def test_a_hand_over_the_face_keeps_the_face(tmp_path):
    """WolfgangLanger_Pexels.mp4: a crying woman whose hand covers her face at times."""
    batch = manifest({"sample_id": "hand", "path": str(SHARED / "WolfgangLanger_Pexels.mp4")})
    base = {"sampling": "every_k", "every_k": 2, "detect_size": 160}
    every = FaceStage(FacesConfig(**base, detect_mode="every"), num_threads=1)(batch)
    keyed = FaceStage(FacesConfig(**base), num_threads=1)(batch)
    face_e = np.isin(every["status"], WITH_FACE)
    face_k = np.isin(keyed["status"], WITH_FACE)
    assert len(face_e) > 200 and face_e.all() and face_k.all()
    assert (keyed["status"] == "carried").sum() > len(face_k) / 2  # most frames not detected
    overlap = np.array([iou(a, b)[0, 0] for a, b in zip(every["box"], keyed["box"], strict=True)])
    assert overlap.mean() >= 0.9 and overlap.min() > 0.6


@needs_shared
def test_a_face_that_shrinks_below_the_later_keyframes_size_is_kept(tmp_path):
    """The first keyframe's large face sets a small detection size for the later ones; a
    face that then shrinks (a zoom out) to 60 px, under what that size shows but above
    min_face, is looked for again at detect_size instead of lost from there on."""
    img = Image.open(SHARED / "single_face.jpg").convert("RGB")
    folder = tmp_path / "zoom_out"
    folder.mkdir()
    for t in range(25):  # the face ~290 px wide on frame 0, ~60 px from frame 12 on
        side = round(880 * (190 / 880) ** min(1.0, t / 12))
        canvas = Image.new("RGB", (640, 360), (128, 128, 128))
        face = img.resize((side, round(side * img.size[1] / img.size[0])))
        canvas.paste(face, (320 - side // 2, 180 - face.size[1] // 2))
        canvas.save(folder / f"image_{t}.png")
    batch = manifest({"sample_id": "zoom_out", "path": str(folder), "media": "frames"})
    every = FaceStage(FacesConfig(detect_mode="every"), num_threads=1)(batch)
    keyed = FaceStage(FacesConfig(), num_threads=1)(batch)  # keyframes 0, 8, 16, 24
    assert np.isin(every["status"], WITH_FACE).all()
    assert np.isin(keyed["status"], WITH_FACE).all(), keyed["status"].tolist()
    assert (keyed["status"] == "carried").sum() >= 5  # frames 17..23 still carried
