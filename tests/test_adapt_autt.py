"""CLIP-AUTT's invariants (method.md "CLIP-AUTT"), on the tiny CLIP and a seeded head."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from pipeline.adapt.autt import CLIPAUTT, SubjectInputs, entropy, window_entropies
from pipeline.adapt.config import AdaptConfig
from pipeline.adapt.context import ContextPrompts
from tests.test_adapt_support import au_setup, random_clips, tiny


@pytest.fixture(scope="module")
def setup():
    return au_setup()


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_step_zero_au_features_equal_clip_au_bit_for_bit(setup) -> None:
    tower, tokens, raw, head = setup
    prompts = ContextPrompts(tower, tokens, fast=False)
    ctx0 = prompts.initial_context().unsqueeze(0).requires_grad_(True)
    assert torch.equal(head.au_features(prompts.features(ctx0)[0]), head.au_features(raw))


def test_step_zero_without_window_selection_is_clip_au(setup) -> None:
    tower, tokens, raw, head = setup
    clips = random_clips(7, seed=1)
    cfg = AdaptConfig(steps=3, window=20, fast=False)
    result = CLIPAUTT(head, tower, tokens, cfg)(SubjectInputs(clips))
    with torch.no_grad():
        expected = torch.softmax(head(torch.from_numpy(clips), raw).logits, dim=-1).numpy()
    assert np.array_equal(result.preds[0], expected.argmax(axis=1))
    assert np.abs(result.probs[0] - expected).max() <= 1e-6
    assert (result.windows == 0).all()  # one window: the clip


def test_zero_steps_is_clip_au_plus_window_selection(setup) -> None:
    tower, tokens, raw, head = setup
    clips = random_clips(5, seed=2)
    adapter = CLIPAUTT(head, tower, tokens, AdaptConfig(steps=0, window=16))
    result = adapter(SubjectInputs(clips))
    assert result.probs.shape == (1, 5, 2) and result.windows.shape == (1, 5) and result.final_step == 0
    np.testing.assert_array_equal(result.context, adapter.prompts.initial_context().numpy())
    with torch.no_grad():
        x = torch.from_numpy(clips)
        wins = head.window_logits(x, head.au_features(raw), 16)  # the head's own window scoring
        best = entropy(wins).argmin(dim=1).numpy()
        probs = torch.softmax(wins[torch.arange(5), torch.from_numpy(best)], dim=-1).numpy()
    np.testing.assert_array_equal(result.windows[0], best)
    assert np.abs(result.final_probs - probs).max() <= 1e-5


def test_window_selection_picks_the_confident_window() -> None:
    tower, tokens, raw, head = au_setup(seed=3)
    head.classifier.fc2.weight.data *= 50  # sharp decisions: entropy tells windows apart
    au = head.au_features(raw)
    with torch.no_grad():  # among random frames: the most confident and the most uncertain single frames
        pool = torch.from_numpy(random_clips(1, seed=4, length=400)[0])
        ent = entropy(head.forward_au(pool[:, None].repeat(1, 3, 1), au).logits)
    sure, unsure = pool[ent.argmin()], pool[ent.argmax()]
    clips = unsure.repeat(4, 20, 1)
    for i, start in enumerate((0, 2, 3, 4)):  # clip i holds the confident frames at start..start+15
        clips[i, start:start + 16] = sure
    scores = window_entropies(head, clips, au, 16, head.cfg.au_scale)
    assert scores.shape == (4, 5)
    result = CLIPAUTT(head, tower, tokens, AdaptConfig(steps=1, window=16))(SubjectInputs(clips.numpy()))
    np.testing.assert_array_equal(result.windows[0], [0, 2, 3, 4])
    assert result.entropies[0].max() < ent.max().item()


def test_windows_are_rechosen_with_the_current_context(setup) -> None:
    tower, tokens, raw, head = setup
    clips = random_clips(12, seed=5)
    adapter = CLIPAUTT(head, tower, tokens, AdaptConfig(steps=4, window=16, lr=5e-2))
    result = adapter(SubjectInputs(clips))
    assert result.probs.shape == (5, 12, 2) and result.entropies.shape == (5, 12)
    with torch.no_grad():
        au = head.au_features(adapter.prompts.features(torch.from_numpy(result.context)[None])[0])
        expected = entropy(head.window_logits(torch.from_numpy(clips), au, 16)).argmin(dim=1).numpy()
    np.testing.assert_array_equal(result.windows[-1], expected)
    assert result.losses[-1] < result.losses[0]  # entropy minimisation does minimise
    np.testing.assert_allclose(result.losses, result.entropies.mean(axis=1), rtol=1e-6)


def test_only_the_context_adapts(setup) -> None:
    tower, tokens, raw, head = setup
    model = tiny().model
    head_before, model_before = state(head), state(model)
    flags = [p.requires_grad for p in head.parameters()]
    head.train()
    adapter = CLIPAUTT(head, tower, tokens, AdaptConfig(steps=3, lr=1e-2))
    result = adapter(SubjectInputs(random_clips(6, seed=6)))
    assert not np.allclose(result.context, adapter.prompts.initial_context().numpy())
    for before, module in ((head_before, head), (model_before, model)):
        after = module.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in head.parameters()] == flags and head.training
    assert all(p.grad is None for p in head.parameters())
    head.eval()


def test_a_subject_does_not_depend_on_its_neighbours(setup) -> None:
    tower, tokens, raw, head = setup
    a, b = SubjectInputs(random_clips(6, seed=7)), SubjectInputs(random_clips(9, seed=8))
    cfg = AdaptConfig(steps=3, lr=1e-2)
    alone = CLIPAUTT(head, tower, tokens, cfg)(a)
    after = CLIPAUTT(head, tower, tokens, cfg).run([b, a])[1]
    beside = CLIPAUTT(head, tower, tokens, dataclasses.replace(cfg, subjects_per_batch=2)).run([b, a])[1]
    for other in (after, beside):
        assert np.abs(other.probs - alone.probs).max() <= 1e-5
        assert np.abs(other.context - alone.context).max() <= 1e-5
        np.testing.assert_array_equal(other.windows, alone.windows)


def test_chunks_accumulate_the_same_gradient(setup) -> None:
    tower, tokens, raw, head = setup
    subject = SubjectInputs(random_clips(7, seed=9))
    whole = CLIPAUTT(head, tower, tokens, AdaptConfig(steps=2, lr=1e-2))(subject)
    chunked = CLIPAUTT(head, tower, tokens, AdaptConfig(steps=2, lr=1e-2, chunk_size=3))(subject)
    assert np.abs(whole.context - chunked.context).max() <= 1e-5
    assert np.abs(whole.probs - chunked.probs).max() <= 1e-5


def test_fast_and_plain_paths_adapt_alike(setup) -> None:
    tower, tokens, raw, head = setup
    subject = SubjectInputs(random_clips(5, seed=10))
    fast = CLIPAUTT(head, tower, tokens, AdaptConfig(steps=2, lr=1e-2, fast=True))(subject)
    plain = CLIPAUTT(head, tower, tokens, AdaptConfig(steps=2, lr=1e-2, fast=False))(subject)
    assert np.abs(fast.probs - plain.probs).max() <= 1e-5
    assert fast.seconds["total"] > 0 and set(fast.seconds) >= {"setup", "steps", "per_step"}


def test_labels_cannot_get_in(setup) -> None:
    assert [f.name for f in dataclasses.fields(SubjectInputs)] == ["clips", "strided"]
    with pytest.raises(TypeError):
        SubjectInputs(random_clips(2, seed=0), labels=np.zeros(2))  # type: ignore[call-arg]
    subject = SubjectInputs(random_clips(2, seed=0))
    with pytest.raises((AttributeError, TypeError)):
        subject.labels = np.zeros(2)  # type: ignore[attr-defined]
    for fn in (CLIPAUTT.__init__, CLIPAUTT.__call__, CLIPAUTT.run):
        assert not any("label" in name for name in inspect.signature(fn).parameters)


def test_bad_inputs_are_named(setup) -> None:
    tower, tokens, raw, head = setup
    adapter = CLIPAUTT(head, tower, tokens, AdaptConfig(window=16))
    with pytest.raises(ValueError, match="window length 16"):
        adapter(SubjectInputs(random_clips(2, seed=0, length=10)))
    with pytest.raises(ValueError, match="clips must be"):
        adapter(SubjectInputs(random_clips(2, seed=0, dim=16)))
    with pytest.raises(ValueError, match="reference prompt tokens|needs reference"):
        CLIPAUTT(head, tower, tokens, AdaptConfig(reference=True))
    with pytest.raises(ValueError, match="adapt.steps"):
        AdaptConfig(steps=-1)
