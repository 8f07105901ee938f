"""clip-autt-reference: each choice of the public code that method.md lists, one test each."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.adapt.autt import CLIPAUTT, SubjectInputs, window_entropies
from pipeline.adapt.config import REFERENCE_METHOD, AdaptConfig
from pipeline.adapt.context import ContextPrompts, reference_tokens
from pipeline.adapt.text_forward import TextTower
from pipeline.embed.prompts import REFERENCE_BANK
from tests.test_adapt_support import make_head, tiny

PHRASES = [phrase for phrase, _ in REFERENCE_BANK]
CFG = AdaptConfig(reference=True, steps=3, window=16, clip_len=20, seed=7)


@pytest.fixture(scope="module")
def setup():
    tower = TextTower(tiny().model)
    return tower, reference_tokens(tower, tiny().tokenizer, PHRASES), make_head(len(PHRASES), seed=1)


def strided(seed: int, lengths=(30, 7, 45, 20, 26, 33)) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(size=(n, 32)).astype(np.float32) for n in lengths)


def test_only_nine_distinct_au_features_at_step_zero(setup) -> None:
    tower, tokens, _ = setup
    assert len(PHRASES) == 46
    prompts = ContextPrompts(tower, tokens, fast=False)
    with torch.no_grad():
        ctx = prompts.initial_context(generator=torch.Generator().manual_seed(0))
        features = prompts.features(ctx[None])[0]
    assert len(torch.unique(features, dim=0)) == 9 == len(torch.unique(tokens.eos))


def test_prompt_is_sos_context_token_zero_then_zeros(setup) -> None:
    tower, tokens, _ = setup
    prompts = ContextPrompts(tower, tokens, fast=False)
    ctx = prompts.initial_context(generator=torch.Generator().manual_seed(0))
    assert ctx.shape == (1, 4, tower.width)  # one context for every AU
    assert 0.012 < float(ctx.std()) < 0.028 and abs(float(ctx.mean())) < 0.005  # N(0, 0.02)
    x = prompts.embeddings(ctx[None]).reshape(46, 77, -1)
    table = tower.token_embedding.weight
    sos = int(tiny().tokenizer(["x"])[0, 0])
    assert torch.equal(x[:, 0], table[sos].expand(46, -1))
    assert torch.equal(x[:, 1:5], ctx.expand(46, -1, -1))
    assert torch.equal(x[:, 5], table[0].expand(46, -1))
    assert not x[:, 6:].any()
    ids = tiny().tokenizer(["inner eyebrows raised."])  # read-out: EOS of the spaced phrase + "."
    assert int(tokens.eos[0]) == int(ids.argmax()) == 5


def test_context_init_is_seeded(setup) -> None:
    tower, tokens, head = setup
    subject = SubjectInputs(None, strided(0))
    zero = lambda seed: CLIPAUTT(head, tower, tokens,  # noqa: E731
                                 AdaptConfig(reference=True, steps=0, seed=seed))(subject).context
    np.testing.assert_array_equal(zero(3), zero(3))
    assert not np.array_equal(zero(3), zero(4))


def test_segments_are_fresh_wrapping_and_seeded(setup) -> None:
    tower, tokens, head = setup
    seqs = strided(1)
    result = CLIPAUTT(head, tower, tokens, CFG)(SubjectInputs(None, seqs))
    starts = result.segment_starts
    assert starts.shape == (4, 6)
    assert all((starts[:, i] < len(s)).all() for i, s in enumerate(seqs))
    assert len({tuple(row) for row in starts.tolist()}) == 4  # redrawn at every step
    again = CLIPAUTT(head, tower, tokens, CFG)(SubjectInputs(None, seqs))
    np.testing.assert_array_equal(again.segment_starts, starts)
    np.testing.assert_array_equal(again.probs, result.probs)


def test_normalised_text_unscaled_window_scores_and_wrapped_segment(setup) -> None:
    tower, tokens, head = setup
    seqs = strided(2, lengths=(7, 12, 25, 31, 40, 9, 18, 50))  # 7, 12, 9, 18: shorter than T, they wrap
    adapter = CLIPAUTT(head, tower, tokens, AdaptConfig(reference=True, steps=0, seed=5, fast=False))
    result = adapter(SubjectInputs(None, seqs))
    with torch.no_grad():
        text = adapter.prompts.features(torch.from_numpy(result.context)[None])[0]
        unit = head.au_features(F.normalize(text, dim=-1))
        segs = torch.stack([torch.from_numpy(s[(int(st) + np.arange(20)) % len(s)])
                            for s, st in zip(seqs, result.segment_starts[0])])
        windows = window_entropies(head, segs, unit, 16, scale=1.0).argmin(dim=1)
        chosen = segs.unfold(1, 16, 1).permute(0, 1, 3, 2)[torch.arange(len(segs)), windows]
        out = head.forward_au(chosen, unit)
        raw_out = head.forward_au(chosen, head.au_features(text))
        scaled = window_entropies(head, segs, unit, 16, scale=head.cfg.au_scale).argmin(dim=1)
    np.testing.assert_array_equal(result.windows[0], windows.numpy())
    assert np.abs(result.probs[0] - torch.softmax(out.logits, -1).numpy()).max() <= 1e-6
    assert np.abs(result.au_scores[0] - out.au_sim.numpy()).max() <= 1e-5
    assert np.abs(result.probs[0] - torch.softmax(raw_out.logits, -1).numpy()).max() > 1e-4
    assert not torch.equal(windows, scaled)  # unscaled scores choose other windows than 5x ones


def test_adamw_is_recreated_before_every_step(setup) -> None:
    tower, tokens, head = setup
    subject, lr, wd = SubjectInputs(None, strided(3)), 1e-3, 1e-4
    contexts = [CLIPAUTT(head, tower, tokens, AdaptConfig(reference=True, steps=k, seed=2, lr=lr,
                                                          weight_decay=wd))(subject).context for k in (0, 1, 2)]
    for before, after in zip(contexts, contexts[1:]):
        step = np.abs(after - before * (1 - lr * wd))
        # a fresh Adam's first update is lr * g / (|g| + eps): lr wherever |g| >> eps; a kept
        # Adam's second update (m / sqrt(v) with two gradients) is not
        assert np.mean(np.isclose(step, lr, rtol=1e-3, atol=0)) > 0.95
        assert step.max() <= lr * (1 + 1e-3)


def test_predictions_come_from_the_forward_before_the_last_update(setup) -> None:
    tower, tokens, head = setup
    result = CLIPAUTT(head, tower, tokens, CFG)(SubjectInputs(None, strided(4)))
    assert result.probs.shape[0] == CFG.steps + 1 and result.final_step == CFG.steps - 1
    np.testing.assert_array_equal(result.final_probs, result.probs[CFG.steps - 1])
    assert CFG.method == REFERENCE_METHOD == "clip-autt-reference"


def test_reference_needs_strided_sequences_and_reference_tokens(setup) -> None:
    tower, tokens, head = setup
    with pytest.raises(ValueError, match="strided sequences"):
        CLIPAUTT(head, tower, tokens, CFG)(SubjectInputs(np.zeros((2, 20, 32), np.float32)))
    with pytest.raises(ValueError, match="needs template prompt tokens"):
        CLIPAUTT(head, tower, tokens, AdaptConfig())


def test_reference_subjects_are_independent(setup) -> None:
    tower, tokens, head = setup
    a, b = SubjectInputs(None, strided(5)), SubjectInputs(None, strided(6, lengths=(22, 40)))
    alone = CLIPAUTT(head, tower, tokens, CFG)(a)
    pair = AdaptConfig(**{**CFG.to_dict(), "subjects_per_batch": 2})
    beside = CLIPAUTT(head, tower, tokens, pair).run([b, a])[1]
    assert np.abs(alone.probs - beside.probs).max() <= 1e-5
    np.testing.assert_array_equal(alone.segment_starts, beside.segment_starts)
