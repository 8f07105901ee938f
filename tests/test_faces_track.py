"""Tracking (one face per sample, smoothing, gap filling) and crop geometry, on synthetic
detections and images: no detector here."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pipeline  # noqa: F401
from pipeline.faces.config import FacesConfig
from pipeline.faces.crop import crop_face, crop_geometry, resize_square
from pipeline.faces.detect import FrameFaces
from pipeline.faces.track import FILLED, NONE, OK, follow, iou


def _faces(*boxes_probs) -> FrameFaces:
    if not boxes_probs:
        return FrameFaces.empty()
    boxes = np.array([b for b, _ in boxes_probs], np.float32)
    probs = np.array([p for _, p in boxes_probs], np.float32)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    marks = np.stack([np.stack([cx + dx, cy + dy], -1) for dx, dy in
                      [(-10, -5), (10, -5), (0, 3), (-8, 12), (8, 12)]], 1)
    return FrameFaces(boxes, probs, marks.astype(np.float32))


BIG = [100.0, 100.0, 200.0, 220.0]


def test_iou_basics():
    assert iou(np.array(BIG), np.array(BIG))[0, 0] == pytest.approx(1.0)
    assert iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10]))[0, 0] == pytest.approx(1 / 3)
    assert iou(np.array([0, 0, 1, 1]), np.zeros((0, 4))).shape == (1, 0)


def test_short_gaps_are_interpolated_and_long_gaps_stay_empty():
    cfg = FacesConfig(max_gap=2, smooth=1)
    step = np.array([4.0, 0.0, 4.0, 0.0], np.float32)
    box = np.array(BIG, np.float32)
    present = [0, 3, 4, 8, 9]  # gap of 2 (filled), gap of 3 (too long)
    dets = [_faces((box + t * step, 0.99)) if t in present else _faces() for t in range(11)]
    ts = np.arange(11) * 0.04
    face = follow(dets, ts, cfg)
    assert list(face.state) == [OK, FILLED, FILLED, OK, OK, NONE, NONE, NONE, OK, OK, NONE]
    assert np.allclose(face.boxes[1], box + step, atol=1e-4)  # linear in time
    assert np.allclose(face.boxes[2], box + 2 * step, atol=1e-4)
    assert np.isnan(face.probs[1]) and face.probs[0] == pytest.approx(0.99)
    assert np.isnan(face.boxes[6]).all() and np.isnan(face.boxes[10]).all()


def test_filling_follows_container_time_and_skips_undecodable_frames():
    cfg = FacesConfig(max_gap=3, smooth=1)
    a, b = np.array(BIG, np.float32), np.array(BIG, np.float32) + 30
    dets = [_faces((a, 0.99)), _faces(), None, _faces((b, 0.99))]
    ts = np.array([0.0, 0.1, 0.15, 0.4])  # variable frame rate
    face = follow(dets, ts, cfg)
    assert list(face.state) == [OK, FILLED, NONE, OK]  # the undecodable frame is not filled
    assert np.allclose(face.boxes[1], a + 30 * 0.25, atol=1e-4)


def test_one_track_wins_the_largest_and_stable_face():
    cfg = FacesConfig(smooth=1)
    rng = np.random.default_rng(0)
    small = np.array([400.0, 50.0, 450.0, 110.0])
    dets = []
    for t in range(12):
        found = [(np.array(BIG) + t, 0.999), (small + rng.normal(0, 1, 4), 0.999)]
        if t % 3 == 0:  # a bigger face flickering at random places: never the same place
            x = 600.0 + 150 * t
            found.append((np.array([x, 0.0, x + 130, 150.0]), 0.98))
        dets.append(_faces(*found))
    face = follow(dets, np.arange(12) / 25, cfg)
    assert (face.state == OK).all()
    for t in range(12):
        assert np.allclose(face.boxes[t], np.array(BIG) + t, atol=1e-4)


def test_smoothing_removes_jitter_but_follows_steady_motion():
    cfg = FacesConfig(smooth=5)
    jitter = [0.0, 6.0, 0.0, 6.0, 0.0, 6.0, 0.0]
    dets = [_faces((np.array(BIG) + j, 0.99)) for j in jitter]
    face = follow(dets, np.arange(7) / 25, cfg)
    assert np.ptp(face.boxes[2:5, 0]) < 2 < np.ptp(jitter)
    assert face.boxes[3][0] == pytest.approx(BIG[0] + 3.6, abs=1e-4)  # frames 1-5: 6 0 6 0 6
    # a face moving 5 px per frame keeps its true boxes, first and last frames included
    moving = [_faces((np.array(BIG) + 5.0 * t, 0.99)) for t in range(6)]
    face = follow(moving, np.arange(6) / 25, cfg)
    assert np.allclose(face.boxes, np.array(BIG) + 5.0 * np.arange(6)[:, None], atol=1e-4)


def test_no_detections_give_no_face_everywhere():
    face = follow([_faces(), None, _faces()], np.zeros(3), FacesConfig())
    assert (face.state == NONE).all() and np.isnan(face.boxes).all()


def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)


def test_crop_is_the_square_around_the_box_with_margin():
    frame = _gradient(300, 400)
    cx, cy, w, h, angle = crop_geometry(np.array([100, 50, 180, 150]), None, 0.2, False)
    assert (cx, cy, angle) == (140.0, 100.0, 0.0) and w == h == pytest.approx(120.0)
    stretch = crop_geometry(np.array([100, 50, 180, 150]), None, 0.2, False, "stretch")
    assert stretch[2:4] == pytest.approx((96.0, 120.0))
    squeezed = crop_face(frame, np.array([110.0, 60.0, 174.0, 188.0]), None, 64, 0.0,
                         aspect="stretch")
    assert np.array_equal(squeezed[:, :, 0], frame[60:124, 110:174, 0])  # x = column % 256
    # a box already at the output scale: the crop is the frame's pixels themselves
    crop = crop_face(frame, np.array([110.0, 60.0, 174.0, 124.0]), None, 64, 0.0)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop, frame[60:124, 110:174])
    # outside the frame is black
    corner = crop_face(frame, np.array([-32.0, -32.0, 32.0, 32.0]), None, 64, 0.0)
    assert corner[:30, :30].max() == 0 and np.array_equal(corner[34:, 34:], frame[2:32, 2:32])
    # shrinking is antialiased: a one-pixel checkerboard comes out flat grey
    checker = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    small = crop_face(checker, np.array([0.0, 0.0, 256.0, 256.0]), None, 32, 0.0)
    assert abs(float(small[4:-4, 4:-4].mean()) - 127.5) < 2 and np.ptp(small[4:-4, 4:-4]) <= 2


def test_aligned_crop_levels_the_eyes_and_is_deterministic():
    frame = np.zeros((200, 200, 3), np.uint8)
    angle = math.radians(20)
    eyes = []
    for side in (-1, 1):  # two bright dots: the eyes, on a line tilted by 20 degrees
        ex, ey = 100 + side * 30 * math.cos(angle), 90 + side * 30 * math.sin(angle)
        frame[int(ey) - 3: int(ey) + 4, int(ex) - 3: int(ex) + 4] = 255
        eyes.append((ex, ey))
    marks = np.array(eyes + [(100, 110), (85, 130), (115, 130)], np.float32)
    box = np.array([50.0, 40.0, 150.0, 140.0], np.float32)
    plain = crop_face(frame, box, marks, 100, 0.0, align=False)
    aligned = crop_face(frame, box, marks, 100, 0.0, align=True)
    assert np.array_equal(aligned, crop_face(frame, box, marks, 100, 0.0, align=True))

    def eye_rows(img):
        mask = img[..., 0] > 128
        ys, xs = np.nonzero(mask)
        left, right = ys[xs < 50], ys[xs >= 50]
        return left.mean(), right.mean()

    ly, ry = eye_rows(plain)
    assert ry - ly > 15  # tilted before
    ly, ry = eye_rows(aligned)
    assert abs(ry - ly) < 1.5  # level after


def test_resize_square_keeps_edges():
    img = np.full((50, 80, 3), 200, np.uint8)
    out = resize_square(img, 32)
    assert out.shape == (32, 32, 3) and (out == 200).all()


def _dense_resample(frame: np.ndarray, origin: tuple[float, float], step: tuple[float, float],
                    n: tuple[int, int], black_outside: bool) -> np.ndarray:
    """Reference: the same bicubic kernel as one dense (n_out, n_in) matrix per axis."""
    def matrix(o: float, s: float, n_out: int, n_in: int) -> np.ndarray:
        centres = o + (np.arange(n_out) + 0.5) * s
        scale = max(s, 1.0)
        d = np.abs(((np.arange(-64, n_in + 64) + 0.5)[None, :] - centres[:, None]) / scale)
        a = -0.5
        w = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                     np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
        inside = np.zeros(w.shape[1], bool)
        inside[64:64 + n_in] = True
        total = w.sum(1, keepdims=True) if black_outside else w[:, inside].sum(1, keepdims=True)
        return w[:, inside] / np.where(total == 0, 1.0, total)
    wy = matrix(origin[1], step[1], n[1], frame.shape[0])
    wx = matrix(origin[0], step[0], n[0], frame.shape[1])
    return np.einsum("yi,xj,ijc->yxc", wy, wx, frame.astype(np.float64))


def test_banded_resampling_equals_the_dense_kernel():
    """The crop filter touches k taps per pixel; it must equal the full matrix product
    (shrinking, enlarging, boxes partly or wholly outside the frame, both edge rules)."""
    from pipeline.faces.crop import _separable, resample_taps

    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    cases = [((10.3, 5.7), (1.9, 2.3), (24, 20)), ((-30.0, -12.5), (0.6, 0.45), (40, 36)),
             ((100.2, 70.1), (1.0, 1.0), (32, 32)), ((-500.0, 0.0), (1.5, 1.5), (8, 8)),
             ((0.0, 0.0), (120 / 16, 90 / 16), (16, 16)),  # many taps: dense products
             ((5.0, 5.0), (6.0, 1.2), (10, 30))]  # dense along x, gathered taps along y
    for (x0, y0), (sx, sy), (nx, ny) in cases:
        for black in (True, False):
            got = _separable(frame, resample_taps(y0, sy, ny, 90, black),
                             resample_taps(x0, sx, nx, 120, black))
            want = _dense_resample(frame, (x0, y0), (sx, sy), (nx, ny), black)
            assert got.shape == (ny, nx, 3)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
