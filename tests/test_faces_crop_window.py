"""The two resamplings of the face stage (faces.resample): ``fast`` (crop regions rounded to
whole pixels, torch's antialiased uint8 kernels) against ``exact`` (sub-pixel crop regions,
float64 separable bicubic; float downscaling for MTCNN), and how the setting enters the
fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import pipeline  # noqa: F401  (torchvision fix before facenet-pytorch)
from pipeline.faces.config import FacesConfig
from pipeline.faces.crop import crop_face, resize_square, window
from pipeline.faces.shard import config_of_fingerprint, crop_fingerprint, fingerprint_config


def _smooth_frame(h: int = 240, w: int = 320, seed: int = 1) -> np.ndarray:
    """Blurred noise: structure at every position, nothing finer than a few pixels."""
    noise = np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.float64)
    return np.clip(gaussian_filter(noise, (4, 4, 0)) * 4 - 384, 0, 255).astype(np.uint8)


def test_window_rounds_the_region_to_whole_pixels():
    assert window(10.4, 10.5, 99.6, 100.49) == (10, 11, 100, 100)
    assert window(-3.5, -0.2, 0.2, 7.5) == (-3, 0, 1, 8)


def test_fast_crops_match_exact_ones_within_the_rounding():
    frame = _smooth_frame()
    rng = np.random.default_rng(3)
    gaps = {False: [], True: []}
    for i in range(120):
        x1, y1 = rng.uniform(-60, 300), rng.uniform(-60, 220)
        side = rng.uniform(20, 200, size=2)
        box = np.array([x1, y1, x1 + side[0], y1 + side[1]], np.float32)
        marks = rng.uniform(0, 240, (5, 2)).astype(np.float32)
        aligned = i % 2 == 1
        aspect = "stretch" if i % 3 == 0 else "square"
        fast = crop_face(frame, box, marks, 112, 0.2, aligned, aspect)
        exact = crop_face(frame, box, marks, 112, 0.2, aligned, aspect, method="exact")
        assert fast.shape == exact.shape == (112, 112, 3) and fast.dtype == np.uint8
        gaps[aligned].append(np.abs(fast.astype(int) - exact)[4:-4, 4:-4].mean())
    # the region moves by at most half a source pixel: grey levels move by about one
    assert max(gaps[False]) < 4 and np.mean(gaps[False]) < 1.5
    assert max(gaps[True]) < 2 and np.mean(gaps[True]) < 1.0  # rotated about the exact centre
    # a region already on whole pixels: the same kernel, only uint8 against float64 sums
    box = np.array([40.0, 30.0, 140.0, 130.0], np.float32)  # 120 px with the margin
    fast = crop_face(frame, box, None, 96, 0.2)
    exact = crop_face(frame, box, None, 96, 0.2, method="exact")
    assert np.abs(fast.astype(int) - exact).max() <= 2
    # a pre-cropped face is the whole image: no rounding at all
    whole = np.abs(resize_square(frame, 64).astype(int) - resize_square(frame, 64, "exact"))
    assert whole.max() <= 2


def test_fast_crop_is_black_outside_and_never_aliases_the_frame():
    frame = _smooth_frame(100, 100)
    off = crop_face(frame, np.array([500.0, 500.0, 600.0, 600.0], np.float32), None, 32, 0.0)
    assert off.max() == 0
    same = crop_face(frame, np.array([10.0, 10.0, 42.0, 42.0], np.float32), None, 32, 0.0)
    assert np.array_equal(same, frame[10:42, 10:42])
    same[:] = 0
    assert frame[10:42, 10:42].any()  # the crop is a copy
    locked = frame.copy()
    locked.flags.writeable = False  # as decoders may hand frames out
    assert crop_face(locked, np.array([5.0, 5.0, 60.0, 70.0]), None, 32, 0.2).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="not finite.*inf"):
        crop_face(frame, np.array([0.0, 0.0, np.inf, 10.0]), None, 32, 0.2)
    with pytest.raises(ValueError, match="crop resampling .*'nearest'"):
        crop_face(frame, np.array([0.0, 0.0, 10.0, 10.0]), None, 32, 0.2, method="nearest")


def test_resample_setting_and_fingerprints():
    with pytest.raises(ValueError, match=r"faces\.resample .*'bilinear'"):
        FacesConfig(resample="bilinear")  # type: ignore[arg-type]
    assert FacesConfig().resample == "fast"
    new = fingerprint_config(FacesConfig())
    old = fingerprint_config(FacesConfig(resample="exact"))
    # the default changes the fingerprint: tables made before it are told to recompute
    assert new["faces"]["resample"] == "fast" and "resample" not in old["faces"]
    # a fingerprint made before the setting existed reads back as the old resampling
    assert config_of_fingerprint(old["faces"]).resample == "exact"
    assert config_of_fingerprint(new["faces"]) == FacesConfig()
    assert crop_fingerprint(FacesConfig())["resample"] == "fast"
    assert crop_fingerprint(FacesConfig(resample="exact")) == {
        "crop_size": 224, "margin": 0.2, "align": False, "aspect": "square"}
