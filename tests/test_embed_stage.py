"""EmbedStage: the same numbers as a direct image-tower call, any batch size, N = 0."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.embed.config import EmbedConfig
from pipeline.embed.preprocess import preprocess_batch
from pipeline.embed.stage import EmbedStage

TINY = EmbedConfig(model="autt-tiny", weights="random", batch_size=3, device="cpu",
                   dtype="float32")


@pytest.fixture(scope="module")
def stage() -> EmbedStage:
    return EmbedStage(TINY)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (7, 224, 224, 3), dtype=np.uint8)


def _direct(stage: EmbedStage, crops: np.ndarray) -> np.ndarray:
    bb = stage.backbone
    with torch.inference_mode():
        x = preprocess_batch(crops, bb.image_size, bb.mean, bb.std)
        return bb.model.encode_image(x).numpy()


def test_stage_equals_direct_encode_image(stage, crops) -> None:
    out = stage({"crop_pixels": crops, "frame_index": np.arange(7)})
    emb = out["embedding"]
    assert emb.shape == (7, stage.backbone.embed_dim) and emb.dtype == np.float32
    np.testing.assert_array_equal(out["frame_index"], np.arange(7))
    # Exact (CPU float32) against the same chunks of 3; a single call over all 7 may differ
    # in the last bits because the GEMM blocking changes with the row count.
    chunks = np.concatenate([_direct(stage, crops[i : i + 3]) for i in range(0, 7, 3)])
    np.testing.assert_array_equal(emb, chunks)
    np.testing.assert_allclose(emb, _direct(stage, crops), rtol=0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0)  # raw, not normalised


def test_one_batch_is_bit_exact(crops) -> None:
    whole = EmbedStage(replace(TINY, batch_size=64))
    np.testing.assert_array_equal(whole({"crop_pixels": crops})["embedding"],
                                  _direct(whole, crops))


def test_empty_batch(stage) -> None:
    out = stage({"crop_pixels": np.zeros((0, 224, 224, 3), np.uint8), "sample_id": np.array([])})
    assert out["embedding"].shape == (0, stage.backbone.embed_dim)
    assert out["embedding"].dtype == np.float32


def test_object_column_and_other_sizes(stage, crops) -> None:
    column = np.empty(2, dtype=object)
    column[0], column[1] = crops[0], crops[1]
    np.testing.assert_array_equal(stage({"crop_pixels": column})["embedding"],
                                  stage({"crop_pixels": crops[:2]})["embedding"])
    small = stage({"crop_pixels": crops[:2, :160, :160]})["embedding"]
    assert small.shape == (2, stage.backbone.embed_dim) and np.isfinite(small).all()


def test_threads_and_bad_batches(stage) -> None:
    before = torch.get_num_threads()
    try:
        threaded = EmbedStage(TINY, num_threads=1, backbone=stage.backbone)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        threaded({"crop_pixels": np.zeros((1, 224, 224, 3), np.uint8)})
        assert torch.get_num_threads() == 1  # re-applied on call (Ray worker threads)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(KeyError, match="crop_pixels"):
        stage({"pixels": np.zeros((1, 224, 224, 3), np.uint8)})
    with pytest.raises(ValueError, match="uint8"):
        stage({"crop_pixels": np.zeros((1, 224, 224, 3), np.float32)})
    with pytest.raises(ValueError, match="num_threads"):
        EmbedStage(TINY, num_threads=0, backbone=stage.backbone)
