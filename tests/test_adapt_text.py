"""The rebuilt text forward: bit-exact plain path, fast and batched paths, refusals."""

from __future__ import annotations

import open_clip  # conftest has made torchvision importable
import pytest
import torch

from pipeline.adapt.context import ContextPrompts, template_tokens
from pipeline.adapt.text_forward import TextTower, UnsupportedTextTower
from pipeline.embed.backbone import load_backbone
from pipeline.embed.config import EmbedConfig
from pipeline.embed.prompts import PromptConfig, au_prompts
from pipeline.embed.text import encode_texts

SMALL_VISION = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16}


def small_text(**extra) -> dict:
    return {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, **extra}


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(EmbedConfig(model="autt-tiny", weights="random", seed=0, device="cpu"))


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return au_prompts(PromptConfig())


def test_plain_path_reproduces_encode_text_bit_for_bit(tiny, prompts) -> None:
    tower = TextTower(tiny.model)
    cache = torch.from_numpy(encode_texts(tiny, prompts, batch_size=len(prompts)))  # the stored features
    with torch.no_grad():
        direct = tiny.model.encode_text(tiny.tokenizer(prompts))
    context = ContextPrompts(tower, template_tokens(tower, tiny.tokenizer, prompts, 4), fast=False)
    assert context.length == 77
    ctx = context.initial_context().unsqueeze(0).requires_grad_(True)  # as adaptation runs it
    features = context.features(ctx)[0]
    assert torch.equal(features, cache)
    assert torch.equal(features, direct)
    assert tower.width == 64 and tower.embed_dim == 32  # the context is w wide, not d


def test_fast_path_truncates_to_the_last_eos_and_agrees(tiny, prompts) -> None:
    tower = TextTower(tiny.model)
    tokens = template_tokens(tower, tiny.tokenizer, prompts, 4)
    plain, fast = ContextPrompts(tower, tokens, fast=False), ContextPrompts(tower, tokens, fast=True)
    assert fast.length == int(tokens.eos.max()) + 1 == 18
    assert len(fast.buckets) == 3 and sum(len(r) * n for r, n in fast.buckets) == 590  # not 47 x 18
    assert sorted(i for r, _ in fast.buckets for i in r) == list(range(len(prompts)))
    ctx = plain.initial_context().unsqueeze(0) + 0.05 * torch.randn(1, len(prompts), 4, 64,
                                                                    generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = plain.features(ctx), fast.features(ctx)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert not torch.equal(ctx, plain.initial_context().unsqueeze(0))
    # the gradient w.r.t. the context agrees too (what adaptation follows)
    grads = []
    for path in (plain, fast):
        leaf = ctx.clone().requires_grad_(True)
        path.features(leaf).square().sum().backward()
        grads.append(leaf.grad)
    scale = grads[0].abs().max()  # float32 sums of large terms: compare relative to the largest
    assert (grads[0] - grads[1]).abs().max() <= 1e-5 * scale


def test_length_buckets_pad_fewest_tokens() -> None:
    import itertools
    import random

    from pipeline.adapt.context import length_buckets

    rng = random.Random(0)
    for _ in range(200):
        ends = [rng.randint(3, 20) for _ in range(rng.randint(1, 12))]
        for most in (1, 2, 3):
            got = length_buckets(ends, most)
            assert len(got) <= most and sorted(i for r, _ in got for i in r) == list(range(len(ends)))
            assert all(max(ends[i] for i in r) == n for r, n in got)
            lengths = sorted(set(ends))
            best = min(  # every way to cut the sorted lengths into at most `most` runs
                sum(sum(ends.count(x) for x in run) * run[-1] for run in
                    (lengths[a:b] for a, b in zip((0, *cuts), (*cuts, len(lengths)))))
                for k in range(min(most, len(lengths)))
                for cuts in itertools.combinations(range(1, len(lengths)), k))
            assert sum(len(r) * n for r, n in got) == best


def test_several_contexts_in_one_forward_are_independent(tiny, prompts) -> None:
    tower = TextTower(tiny.model)
    context = ContextPrompts(tower, template_tokens(tower, tiny.tokenizer, prompts, 4), fast=True)
    gen = torch.Generator().manual_seed(2)
    base = context.initial_context()
    ctxs = [(base + 0.1 * torch.randn(base.shape, generator=gen)).requires_grad_(True) for _ in range(3)]
    joint = context.features(torch.stack(ctxs))  # [3, K, d]
    joint.pow(2).sum(dim=(1, 2)).mul(torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    for i, ctx in enumerate(ctxs):
        alone_ctx = ctx.detach().clone().requires_grad_(True)
        alone = context.features(alone_ctx.unsqueeze(0))
        (float(i + 1) * alone.pow(2).sum()).backward()
        assert torch.allclose(joint[i], alone[0], atol=1e-5, rtol=0)
        assert torch.allclose(ctx.grad, alone_ctx.grad, atol=1e-5, rtol=1e-4)
    plain = ContextPrompts(tower, context.tokens, fast=False)
    with torch.no_grad():
        assert torch.allclose(plain.features(torch.stack(ctxs)), joint, atol=1e-5, rtol=0)


def test_a_shared_context_broadcasts_over_prompts(tiny, prompts) -> None:
    tower = TextTower(tiny.model)
    context = ContextPrompts(tower, template_tokens(tower, tiny.tokenizer, prompts, 4), fast=False)
    shared = context.initial_context(shared=True)
    assert shared.shape == (1, 4, 64)
    with torch.no_grad():
        assert torch.equal(context.features(shared.unsqueeze(0)),
                           context.features(context.initial_context().unsqueeze(0)))


def test_prompts_must_share_the_prefix_and_fit(tiny) -> None:
    tower = TextTower(tiny.model)
    with pytest.raises(ValueError, match="same 4 tokens"):
        template_tokens(tower, tiny.tokenizer, ["a human face with x.", "one photo of a face with y."], 4)
    with pytest.raises(ValueError, match="truncated"):
        template_tokens(tower, tiny.tokenizer, ["a human face with " + "very " * 80], 4)


def test_refuses_a_hugging_face_text_tower() -> None:
    model = open_clip.CustomTextCLIP(16, SMALL_VISION, small_text())
    from open_clip.hf_model import HFTextEncoder

    fake = HFTextEncoder.__new__(HFTextEncoder)  # needs no transformers package: never run
    torch.nn.Module.__init__(fake)
    model.text = fake
    with pytest.raises(UnsupportedTextTower, match="Hugging Face text tower"):
        TextTower(model)


def test_accepts_an_open_clip_text_transformer_inside_custom_text_clip() -> None:
    model = open_clip.CustomTextCLIP(16, SMALL_VISION, small_text()).eval()
    tower = TextTower(model)
    ids = open_clip.SimpleTokenizer(context_length=77)(["a human face with lips pressed."])
    with torch.no_grad():
        assert torch.equal(tower(tower.embed(ids), tower.eos_index(ids)), model.encode_text(ids))


@pytest.mark.parametrize(("text_cfg", "reason"), [
    ({"no_causal_mask": True}, "no causal attention mask"),
    ({"pool_type": "last"}, "pool_type='last'"),
    ({"pool_type": "first"}, "pool_type='first'"),
])
def test_refuses_towers_without_a_causal_eos_read_out(text_cfg, reason) -> None:
    model = open_clip.CLIP(16, SMALL_VISION, small_text(**text_cfg))
    with pytest.raises(UnsupportedTextTower, match=reason):
        TextTower(model)


def test_refuses_a_class_token() -> None:
    model = open_clip.CustomTextCLIP(16, SMALL_VISION, small_text(embed_cls=True))
    with pytest.raises(UnsupportedTextTower, match="class token"):
        TextTower(model)


def test_refuses_a_mask_that_is_not_causal() -> None:
    model = open_clip.CLIP(16, SMALL_VISION, small_text())
    model.attn_mask = torch.zeros(77, 77)
    with pytest.raises(UnsupportedTextTower, match="not the causal mask"):
        TextTower(model)


def test_eos_pooling_reads_the_eos_token() -> None:
    model = open_clip.CLIP(16, SMALL_VISION, small_text(pool_type="eos", eos_id=49407)).eval()
    tower = TextTower(model)
    ids = open_clip.SimpleTokenizer(context_length=77)(["a human face with jaw clenched.", "lip bite"])
    assert torch.equal(tower.eos_index(ids), ids.argmax(dim=-1))
    with torch.no_grad():
        assert torch.equal(tower(tower.embed(ids), tower.eos_index(ids)), model.encode_text(ids))


def test_a_moved_open_clip_attribute_is_named() -> None:
    model = open_clip.CLIP(16, SMALL_VISION, small_text())
    del model.ln_final
    with pytest.raises(RuntimeError, match="no attribute 'ln_final'.*open_clip"):
        TextTower(model)
