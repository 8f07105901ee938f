"""TPT-style tuning per video: fresh context per video, the context moves, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.adapt.autt import entropy
from pipeline.adapt.context import template_tokens
from pipeline.adapt.text_forward import TextTower
from pipeline.adapt.tpt import TPT, TPTConfig, unit_mean
from pipeline.embed.prompts import PromptConfig, class_prompts
from pipeline.embed.text import encode_texts
from tests.test_adapt_support import random_clips, tiny

CLASSES = ["neutral", "pain"]


@pytest.fixture(scope="module")
def setup():
    tower = TextTower(tiny().model)
    prompts = class_prompts(PromptConfig(), CLASSES)
    return tower, template_tokens(tower, tiny().tokenizer, prompts, 6), prompts


def test_starts_from_zero_shot_and_the_context_moves(setup) -> None:
    tower, tokens, prompts = setup
    clips = random_clips(4, seed=0)
    result = TPT(tower, tokens)(clips)
    text = torch.from_numpy(encode_texts(tiny(), prompts, batch_size=len(prompts)))
    zero_shot = 100 * unit_mean(torch.from_numpy(clips)) @ torch.nn.functional.normalize(text, dim=-1).T
    assert np.abs(result.initial_logits - zero_shot.numpy()).max() <= 1e-3  # the prefix context: CLIP's prompt
    assert np.abs(result.logits - result.initial_logits).max() > 1e-4  # one step changed the context
    assert result.kept_views.shape == (4, 1)  # 10 % of 5 views, at least one
    np.testing.assert_allclose(result.probs.sum(axis=1), 1, rtol=1e-6)


def test_keeps_the_lowest_entropy_views(setup) -> None:
    tower, tokens, _ = setup
    clips = random_clips(3, seed=1, length=40)  # 25 views: keep 2
    result = TPT(tower, tokens, TPTConfig(steps=1))(clips)
    tpt = TPT(tower, tokens)
    with torch.no_grad():
        ctx = tpt.prompts.initial_context(shared=True)[None]
        views = unit_mean(torch.from_numpy(clips).unfold(1, 16, 1).permute(0, 1, 3, 2))
        ent = entropy(100 * views @ tpt._class_features(ctx)[0].T)
    assert result.kept_views.shape == (3, 2)
    np.testing.assert_array_equal(result.kept_views, ent.argsort(dim=1, stable=True)[:, :2].numpy())


def test_every_video_starts_afresh(setup) -> None:
    tower, tokens, _ = setup
    clips = random_clips(5, seed=2)
    together = TPT(tower, tokens)(clips)
    alone = TPT(tower, tokens)(clips[3:4])
    one_by_one = TPT(tower, tokens, TPTConfig(videos_per_batch=1))(clips)
    assert np.abs(together.logits[3] - alone.logits[0]).max() <= 1e-4
    assert np.abs(together.logits - one_by_one.logits).max() <= 1e-4


def test_deterministic_and_frozen(setup) -> None:
    tower, tokens, _ = setup
    before = {k: v.clone() for k, v in tiny().model.state_dict().items()}
    clips = random_clips(3, seed=3)
    a, b = TPT(tower, tokens)(clips), TPT(tower, tokens)(clips)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.kept_views, b.kept_views)
    assert all(torch.equal(before[k], v) for k, v in tiny().model.state_dict().items())
    with pytest.raises(ValueError, match="clips must be"):
        TPT(tower, tokens)(random_clips(2, seed=0, dim=8))
