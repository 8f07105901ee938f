"""The CLIP-AU head: the reference forward tensor for tensor, shapes, options, names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.model.head import (
    CLIPAUHead,
    HeadConfig,
    config_from_reference,
    count_trainable,
    from_reference_names,
)
from tests.media import shared_data_dir

REFERENCE = "reference/clip_au_reference.safetensors"


def _reference_fixture() -> dict[str, torch.Tensor]:
    root = shared_data_dir()
    if root is None or not (root / REFERENCE).is_file():
        pytest.skip("../shared/data/reference is not present")
    from safetensors.torch import load_file

    return load_file(str(root / REFERENCE))


def _head(seed: int = 0, **kw) -> CLIPAUHead:
    torch.manual_seed(seed)
    return CLIPAUHead(HeadConfig(**{"embed_dim": 16, "n_aus": 5, "n_classes": 3, **kw}))


def test_reference_weights_reproduce_the_reference_forward() -> None:
    fx = _reference_fixture()
    flat = {k[len("head."):]: v for k, v in fx.items() if k.startswith("head.")}
    state, dropped = from_reference_names(flat)
    assert dropped == []
    cfg = config_from_reference(state)
    assert (cfg.embed_dim, cfg.n_aus, cfg.n_classes, cfg.temporal) == (512, 46, 2, "conv")
    head = CLIPAUHead(cfg)
    head.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = head(fx["input.frame_features"], fx["input.au_text_features"])
    torch.testing.assert_close(out.logits, fx["expected.logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.au_sim, fx["expected.au_sim"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.visual, fx["expected.visual_embeds"], rtol=0, atol=1e-5)
    assert out.frame_au is None


@pytest.mark.parametrize("temporal", ["conv", "tcn-transformer"])
@pytest.mark.parametrize("d,k,c", [(32, 47, 2), (8, 3, 5)])
def test_shapes_for_any_width_bank_and_classes(temporal: str, d: int, k: int, c: int) -> None:
    head = _head(embed_dim=d, n_aus=k, n_classes=c, temporal=temporal).eval()
    out = head(torch.randn(4, 7, d), torch.randn(k, d), frame_activations=True)
    assert out.logits.shape == (4, c)
    assert out.au_sim.shape == (4, k)
    assert out.visual.shape == (4, d)
    assert out.frame_au.shape == (4, 7, k)
    torch.testing.assert_close(out.visual.norm(dim=-1), torch.ones(4))
    assert out.au_sim.abs().max() <= 5.0 + 1e-5


def test_pieces_compose_to_the_forward() -> None:
    head = _head().eval()
    frames, text = torch.randn(3, 6, 16), torch.randn(5, 16)
    au = head.au_features(text)
    torch.testing.assert_close(au.norm(dim=-1), torch.ones(5))
    whole = head(frames, text, frame_activations=True)
    parts = head.forward_au(frames, au, frame_activations=True)
    for a, b in zip(whole, parts):
        assert torch.equal(a, b)
    # per-frame activations: 5 * normalise(h_t) a^T, h_t the temporal module's frame t
    _, hidden = head.encode_frames(frames)
    want = 5 * F.normalize(hidden[:, 2], dim=-1) @ au.T
    torch.testing.assert_close(whole.frame_au[:, 2], want)
    # a one-frame clip: its frame activation is its clip similarity
    one = head.forward_au(frames[:, :1], au, frame_activations=True)
    torch.testing.assert_close(one.frame_au[:, 0], one.au_sim)


def test_window_logits_classify_each_window_alone() -> None:
    head = _head().eval()
    frames, au = torch.randn(2, 6, 16), head.au_features(torch.randn(5, 16))
    windows = head.window_logits(frames, au, 4)
    assert windows.shape == (2, 3, 3)
    for w in range(3):
        torch.testing.assert_close(windows[:, w], head.forward_au(frames[:, w:w + 4], au).logits)
    torch.testing.assert_close(head.window_logits(frames, au, 6)[:, 0], head.forward_au(frames, au).logits)
    with pytest.raises(ValueError, match="window length"):
        head.window_logits(frames, au, 7)


def test_about_1_3m_trainable_parameters_for_vit_b32_and_47_aus() -> None:
    head = CLIPAUHead(HeadConfig(embed_dim=512, n_aus=47, n_classes=2))
    adapter = 2 * (512 * 512 + 512)
    conv = 512 * 512 * 3 + 512
    classifier = 47 * 256 + 256 + 256 * 2 + 2
    assert count_trainable(head) == adapter + conv + classifier == 1_325_058
    names = set(head.state_dict())
    assert {"au_adapter.fc1.weight", "temporal.conv.weight", "classifier.fc2.bias"} <= names


def test_tcn_transformer_option_trains() -> None:
    head = _head(seed=1, temporal="tcn-transformer")
    frames, text = torch.randn(8, 10, 16), torch.randn(5, 16)
    labels = torch.arange(8) % 3
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(head(frames, text).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert all(p.grad is not None for p in head.temporal.parameters())


def test_bad_inputs_are_named() -> None:
    head = _head()
    with pytest.raises(ValueError, match=r"AU text features must be \[5, 16\], got \[4, 16\]"):
        head(torch.randn(2, 3, 16), torch.randn(4, 16))
    with pytest.raises(ValueError, match=r"frame features must be \[B, T, 16\]"):
        head(torch.randn(2, 3, 8), torch.randn(5, 16))
    with pytest.raises(ValueError, match="head.temporal"):
        HeadConfig(embed_dim=8, n_aus=2, n_classes=2, temporal="lstm")
    with pytest.raises(ValueError, match="divisible"):
        HeadConfig(embed_dim=10, n_aus=2, n_classes=2, temporal="tcn-transformer")
    with pytest.raises(ValueError, match="n_aus"):
        HeadConfig(embed_dim=8, n_aus=0, n_classes=2)
    with pytest.raises(ValueError, match="unknown fields"):
        HeadConfig.from_dict({"embed_dim": 8, "n_aus": 2, "n_classes": 2, "depth": 3})
    cfg = HeadConfig(embed_dim=8, n_aus=2, n_classes=2, temporal="tcn-transformer")
    assert HeadConfig.from_dict(cfg.to_dict()) == cfg


def test_reference_names_map_and_drop() -> None:
    ref = {"text_adapter.0.weight": torch.zeros(1), "temporal.bias": torch.zeros(1),
           "temporal_proj.weight": torch.zeros(1), "temporal_classifier.2.bias": torch.zeros(1)}
    state, dropped = from_reference_names(ref)
    assert set(state) == {"au_adapter.fc1.weight", "temporal.conv.bias", "classifier.fc2.bias"}
    assert dropped == ["temporal_proj.weight"]
    with pytest.raises(ValueError, match="prompt_learner.ctx"):
        from_reference_names({"prompt_learner.ctx": torch.zeros(1)})
