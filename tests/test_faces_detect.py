"""Detection (MTCNN on downscaled frames, boxes mapped back) and the crop fixture of
facenet-pytorch, on real photos from the shared test media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline  # noqa: F401  (torchvision fix before facenet-pytorch)
from pipeline.faces.config import FacesConfig
from pipeline.faces.detect import (
    FaceDetector,
    detect_shape,
    downscale,
    resolve_device,
    to_source,
)
from pipeline.faces.stage import FaceStage
from tests.media import needs_shared_faces, shared_faces_dir

FACES = shared_faces_dir()
needs_shared = needs_shared_faces()
CPU = torch.device("cpu")


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_detect_shape_and_mapping_back_to_source():
    assert detect_shape(360, 640, 384) == (216, 384)
    assert detect_shape(1067, 1600, 384) == (256, 384)
    assert detect_shape(100, 120, 384) == (100, 120)  # never upscaled
    boxes = np.array([[10.0, 20.0, 50.0, 70.0]])
    # 1600 x 1067 seen as 384 x 256: x scales by 1600 / 384, y by 1067 / 256
    back = to_source(boxes, (1067, 1600), (256, 384))
    assert np.allclose(back, [[41.6667, 83.3594, 208.3333, 291.7578]], atol=1e-3)
    marks = np.arange(10, dtype=np.float64).reshape(1, 10)
    assert np.allclose(to_source(marks, (200, 400), (100, 100))[0, :4], [0, 2, 8, 6])


def test_downscale_keeps_uint8_layout():
    frames = np.random.default_rng(0).integers(0, 256, (2, 90, 160, 3), dtype=np.uint8)
    small = downscale(frames, (45, 80), CPU)
    assert small.shape == (2, 45, 80, 3) and small.dtype == torch.uint8
    flat = np.full((1, 90, 160, 3), 77, np.uint8)
    assert (downscale(flat, (45, 80), CPU) == 77).all()


def test_device_resolution():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="faces.device is 'cuda'"):
            resolve_device("cuda")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(FacesConfig(), CPU)


@needs_shared
def test_single_face_box_in_source_pixels_at_any_detection_size(detector):
    img = _rgb(FACES / "single_face.jpg")
    (faces,) = detector.detect([img])
    assert len(faces) == 1 and faces.probs[0] > 0.999
    # the README's full-size MTCNN box is about [191, 145, 373, 402]
    assert np.allclose(faces.boxes[0], [191, 145, 373, 402], atol=14)
    x1, y1, x2, y2 = faces.boxes[0]
    assert ((faces.landmarks[0, :, 0] > x1) & (faces.landmarks[0, :, 0] < x2)).all()
    assert ((faces.landmarks[0, :, 1] > y1) & (faces.landmarks[0, :, 1] < y2)).all()
    assert faces.landmarks[0, 0, 0] < faces.landmarks[0, 1, 0]  # left eye left of right eye
    (small,) = FaceDetector(FacesConfig(detect_size=160), CPU).detect([img])
    assert len(small) == 1 and np.abs(small.boxes[0] - faces.boxes[0]).max() < 0.06 * (x2 - x1)


@needs_shared
def test_no_face_false_positive_is_rejected_by_the_defaults(detector):
    img = _rgb(FACES / "no-face.jpg")
    assert len(detector.detect([img])[0]) == 0


def test_filters_reject_the_no_face_false_positive_each_alone():
    # what plain full-size MTCNN reports on no-face.jpg (measured: 13x15 px at p 0.954;
    # finding it costs seconds of full-resolution detection, so its output is replayed)
    boxes = np.array([[841.63, 771.71, 854.68, 786.77], [100.0, 100.0, 180.0, 200.0]])
    probs = np.array([0.95396, 0.999])
    points = np.zeros((2, 5, 2))
    hw = (1067, 1600)

    def kept(**kw) -> int:
        return len(FaceDetector(FacesConfig(**kw), CPU).select(boxes, probs, points, hw, hw))

    assert kept() == 1  # the defaults keep only the real-looking face
    assert kept(min_prob=0.5) == 1 and kept(min_face=1) == 1  # each filter alone suffices
    assert kept(min_face=1, min_prob=0.5) == 2


@needs_shared
def test_equal_size_frames_share_a_batch_and_sizes_may_mix(detector):
    a, b = _rgb(FACES / "0-f1-su-ph.jpg"), _rgb(FACES / "single_face.jpg")
    both = detector.detect([a, b, a])
    assert [len(f) for f in both] == [1, 1, 1]
    assert np.allclose(both[0].boxes, both[2].boxes)
    assert np.allclose(both[1].boxes, detector.detect([b])[0].boxes, atol=1e-3)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    x = a.astype(np.float64).ravel() - a.mean()
    y = b.astype(np.float64).ravel() - b.mean()
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


@needs_shared
def test_crops_match_facenet_reference_crops_of_the_same_person():
    people = sorted(p.name for p in (FACES / "test_images").iterdir() if p.is_dir())
    refs = {p.name: _rgb(p / "1.png") for p in sorted((FACES / "test_images_aligned").iterdir())}
    assert len(people) == 4 and len(refs) == 5
    # facenet-pytorch squeezes the box into the square: aspect='stretch' does the same
    cfg = FacesConfig(margin=0.0, crop_size=160, align=False, aspect="stretch")
    n = len(people)
    batch = {
        "sample_id": np.array(people, dtype=object),
        "video_id": np.array(people, dtype=object),
        "subject_id": np.array(people, dtype=object),
        "path": np.array([str(FACES / "test_images" / p / "1.jpg") for p in people], object),
        "media": np.array(["video"] * n, dtype=object),
        "start": np.array([None] * n, dtype=object),
        "end": np.array([None] * n, dtype=object),
        "time_unit": np.array(["s"] * n, dtype=object),
        "shard_id": np.array(["fixture"] * n, dtype=object),
    }
    out = FaceStage(cfg)(batch)
    assert list(out["status"]) == ["ok"] * n and list(out["sample_id"]) == people
    for person, crop in zip(people, out["crop_pixels"], strict=True):
        scores = {name: _ncc(crop, ref) for name, ref in refs.items()}
        others = max(v for k, v in scores.items() if k != person)
        assert scores[person] >= 0.75, (person, scores)
        assert scores[person] >= others + 0.1, (person, scores)
