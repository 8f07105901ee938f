"""The frozen backbone: seeded random init, weights from files and folders, tags offline."""

from __future__ import annotations

import hashlib
import io
import time

import numpy as np
import pytest
import torch

from pipeline.embed.backbone import load_backbone
from pipeline.embed.config import EmbedConfig
from pipeline.embed.preprocess import preprocess_batch

TINY = EmbedConfig(model="autt-tiny", weights="random", seed=0, device="cpu")


def _embed(backbone, crops: np.ndarray) -> np.ndarray:
    x = preprocess_batch(crops, backbone.image_size, backbone.mean, backbone.std)
    with torch.inference_mode():
        return backbone.model.encode_image(x).numpy()


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(TINY)


def test_tiny_backbone_describes_itself(tiny) -> None:
    assert tiny.backbone_id == "autt-tiny__random-s0"
    assert (tiny.embed_dim, tiny.image_size, tiny.context_length) == (32, 224, 77)
    assert len(tiny.weights_digest) == 64
    assert not tiny.model.training
    assert not any(p.requires_grad for p in tiny.model.parameters())
    info = tiny.preprocess_info()
    assert info["size"] == 224 and info["interpolation"] == "bicubic"
    assert info["resize_mode"] == "shortest" and len(info["mean"]) == len(info["std"]) == 3
    assert tiny.tokenizer(["a human face with lip bite."]).shape == (1, 77)


def test_same_seed_same_weights_and_embeddings(tiny, crops) -> None:
    again = load_backbone(TINY)
    assert again.weights_digest == tiny.weights_digest
    np.testing.assert_array_equal(_embed(again, crops), _embed(tiny, crops))
    other = load_backbone(EmbedConfig(model="autt-tiny", weights="random", seed=1, device="cpu"))
    assert other.weights_digest != tiny.weights_digest
    assert other.backbone_id == "autt-tiny__random-s1"


def _mean_cosine_to_centre(features: np.ndarray) -> float:
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    centre = unit.mean(0)
    return float((unit @ (centre / np.linalg.norm(centre))).mean())


def test_tiny_image_tower_is_not_collapsed(tiny) -> None:
    """At open_clip's default init a random image tower maps every image to nearly one
    direction (cosine ~0.995 even between noise images), which holds the CLIP-AU head on
    its initial plateau; autt-tiny's block gain keeps the image in its embedding."""
    import open_clip

    from pipeline.embed.backbone import ARCHITECTURES, scale_vision_blocks

    noise = np.random.default_rng(3).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    assert _mean_cosine_to_centre(_embed(tiny, noise)) < 0.85
    cfg = {k: v for k, v in ARCHITECTURES["autt-tiny"].items() if k != "vision_block_gain"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        plain = open_clip.CLIP(**cfg).eval()
    x = preprocess_batch(noise, 224, tiny.mean, tiny.std)
    with torch.inference_mode():
        before = plain.encode_image(x).numpy()
        scale_vision_blocks(plain.visual, 4.0)  # the same gain turns it into autt-tiny
        after = plain.encode_image(x).numpy()
    assert _mean_cosine_to_centre(before) > 0.98
    np.testing.assert_allclose(after, _embed(tiny, noise), rtol=0, atol=1e-5)


def test_random_init_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_backbone(TINY)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_file_round_trip(tiny, crops, tmp_path, suffix) -> None:
    path = tmp_path / f"tiny{suffix}"
    state = tiny.model.state_dict()
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    # seed 5 proves the loaded weights replace the random init entirely
    loaded = load_backbone(EmbedConfig(model="autt-tiny", weights=str(path), seed=5, device="cpu"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.weights_digest == digest
    assert loaded.backbone_id == f"autt-tiny__file-{digest[:12]}"
    np.testing.assert_array_equal(_embed(loaded, crops), _embed(tiny, crops))


def test_torchscript_archive_and_remote_url(tiny, crops, tmp_path) -> None:
    # OpenAI's released ViT-B-32.pt is a TorchScript archive, which torch.load refuses
    # with weights_only=True; a scripted tiny model is the same kind of file.
    path = tmp_path / "scripted.pt"
    torch.jit.script(tiny.model).save(str(path))
    loaded = load_backbone(EmbedConfig(model="autt-tiny", weights=str(path), device="cpu"))
    np.testing.assert_array_equal(_embed(loaded, crops), _embed(tiny, crops))

    import fsspec

    url = f"memory://weights-{tmp_path.name}/tiny.pt"
    buffer = io.BytesIO()
    torch.save(tiny.model.state_dict(), buffer)
    with fsspec.open(url, "wb") as handle:
        handle.write(buffer.getvalue())
    remote = load_backbone(EmbedConfig(model="autt-tiny", weights=url, device="cpu"))
    assert remote.weights_digest == hashlib.sha256(buffer.getvalue()).hexdigest()
    np.testing.assert_array_equal(_embed(remote, crops), _embed(tiny, crops))


def test_weights_folder_and_checkpoint_dict(tiny, crops, tmp_path) -> None:
    torch.save({"state_dict": tiny.model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    loaded = load_backbone(EmbedConfig(model="autt-tiny", weights=str(tmp_path), device="cpu"))
    np.testing.assert_array_equal(_embed(loaded, crops), _embed(tiny, crops))
    torch.save(tiny.model.state_dict(), tmp_path / "other.bin")
    with pytest.raises(ValueError, match="one weights file"):
        load_backbone(EmbedConfig(model="autt-tiny", weights=str(tmp_path), device="cpu"))


def test_weights_of_another_architecture_are_refused(tiny, tmp_path) -> None:
    state = dict(tiny.model.state_dict())
    state.pop("text_projection")
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r"(?s)partial\.pt.*text_projection"):
        load_backbone(EmbedConfig(model="autt-tiny", weights=str(path), device="cpu"))


def test_pretrained_tag_offline_fails_fast(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = EmbedConfig(model="ViT-B-32", weights="openai", cache_dir=str(tmp_path), device="cpu")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="'openai'") as err:
        load_backbone(cfg)
    assert time.monotonic() - start < 5.0
    assert "HF_HUB_OFFLINE" in str(err.value) and "file" in str(err.value)


def test_bad_weights_and_model_are_named() -> None:
    with pytest.raises(ValueError, match="'no-such-tag'"):
        load_backbone(EmbedConfig(model="ViT-B-32", weights="no-such-tag", device="cpu"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_backbone(EmbedConfig(model="autt-tiny", weights="/nowhere/missing.pt"))
    with pytest.raises(ValueError, match="'ViT-Z-99'"):
        load_backbone(EmbedConfig(model="ViT-Z-99", weights="random"))


@pytest.mark.parametrize(("field", "value"), [
    ("batch_size", 0), ("dtype", "int8"), ("device", "tpu"), ("precision", "fp8"), ("seed", -1),
    ("weights", " "),
])
def test_config_rejects_bad_values(field, value) -> None:
    with pytest.raises(ValueError, match=f"embed.{field}"):
        EmbedConfig(**{field: value})
