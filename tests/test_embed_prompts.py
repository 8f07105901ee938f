"""AU / class prompts, their validation, and the float32 text features."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pipeline.embed.backbone import load_backbone
from pipeline.embed.config import EmbedConfig
from pipeline.embed.prompts import (
    AU_BANK,
    REFERENCE_BANK,
    PromptConfig,
    au_prompts,
    class_prompts,
    count_tokens,
    prompt_rows,
)
from pipeline.embed.text import encode_text_features

CLASSES = ["neutral", "pain"]


def test_default_bank_has_47_coded_phrases() -> None:
    assert len(AU_BANK) == 47
    assert len({phrase for phrase, _ in AU_BANK}) == 47
    assert AU_BANK[0] == ("inner eyebrows raised", "AU1")
    assert AU_BANK[11] == ("cheek dimples formed, lip corners tightened laterally", "AU14")
    assert AU_BANK[-1] == ("tongue show", "AU19")
    uncoded = [phrase for phrase, code in AU_BANK if code is None]
    assert uncoded == ["lick lips"]
    assert all(re.fullmatch(r"AU\d+", code) for _, code in AU_BANK if code is not None)


def test_reference_bank_reproduces_the_public_code() -> None:
    assert len(REFERENCE_BANK) == 46
    assert REFERENCE_BANK[0][0] == "inner_eyebrows_raised"
    assert REFERENCE_BANK[11][0] == "cheek_dimples_formed_lip_corners_tightened_laterally"
    assert REFERENCE_BANK[-1][0] == "nostrils_compressedtongue_show"
    assert all(" " not in p and "," not in p for p, _ in REFERENCE_BANK)
    assert au_prompts(PromptConfig(bank="reference"))[-1] == "nostrils_compressedtongue_show"


def test_prompts_use_one_template() -> None:
    cfg = PromptConfig()
    prompts = au_prompts(cfg)
    assert prompts[0] == "a human face with inner eyebrows raised."
    assert all(p.startswith("a human face with ") and p.endswith(".") for p in prompts)
    assert class_prompts(cfg, CLASSES) == ["a person with an expression of neutral.",
                                           "a person with an expression of pain."]
    negative = class_prompts(cfg, ["pain"], negative=True)
    assert negative == ["a person with an expression of no pain."]
    assert max(count_tokens(p) for p in prompts) <= 18  # why the tiny model keeps 77 tokens


def test_template_prefix_must_be_n_ctx_tokens() -> None:
    bad = "a photo of a human face with {phrase}."
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        PromptConfig(template=bad)
    ok = PromptConfig(template="a person with an expression of {phrase}.", n_ctx=6)
    assert au_prompts(ok)[0] == "a person with an expression of inner eyebrows raised."
    with pytest.raises(ValueError, match="prompts.template"):
        PromptConfig(template="a human face with lips.")
    with pytest.raises(ValueError, match="prompts.class_template"):
        PromptConfig(class_template="a person feeling {phrase}.")


def test_too_long_prompts_are_rejected_with_count_and_limit() -> None:
    long_template = "a human face with {phrase}" + " and very" * 40 + "."
    with pytest.raises(ValueError, match=r"tokens, over the text tower's context length of 77"):
        PromptConfig(template=long_template)
    with pytest.raises(ValueError) as err:
        prompt_rows(PromptConfig(), CLASSES, context_length=16)
    message = str(err.value)
    assert "a human face with" in message and "of 16" in message
    assert re.search(r"is (1[7-9]) tokens", message)
    long_class = "pain " * 80
    with pytest.raises(ValueError, match="pain pain"):
        prompt_rows(PromptConfig(), ["neutral", long_class])


def test_prompt_rows_cover_au_class_and_negative() -> None:
    rows = prompt_rows(PromptConfig(), CLASSES)
    kinds = [r[0] for r in rows]
    assert kinds.count("au") == 47 and kinds.count("class") == 2 and kinds.count("class_neg") == 2
    assert rows[47] == ("class", 0, "neutral", None, "a person with an expression of neutral.")
    with pytest.raises(ValueError, match="distinct"):
        prompt_rows(PromptConfig(), ["pain", "pain"])


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(EmbedConfig(model="autt-tiny", weights="random", device="cpu"))


def test_text_features_are_raw_float32(tiny) -> None:
    table = encode_text_features(tiny, PromptConfig(), CLASSES)
    n = 47 + 2 * len(CLASSES)
    assert {len(v) for v in table.values()} == {n}
    au = table["kind"] == "au"
    assert table["feature"].dtype == np.float32
    assert table["feature"][au].shape == (47, tiny.embed_dim)
    assert list(table["code"][au][:2]) == ["AU1", "AU2"] and table["code"][~au][0] is None
    assert list(table["index"][~au]) == [0, 1, 0, 1]
    # Bit for bit only where the arithmetic is the same: the AU bank is encoded as one batch
    # of exactly its K prompts, each class-prompt kind as its own batch. Another batch size
    # may pick other kernels (off by ~1e-7 on some CPUs), so that is compared with a tolerance.
    with torch.inference_mode():
        for kind in ("au", "class", "class_neg"):
            sel = table["kind"] == kind
            direct = tiny.model.encode_text(tiny.tokenizer(list(table["prompt"][sel]))).numpy()
            np.testing.assert_array_equal(table["feature"][sel], direct)  # raw, not normalised
        five = tiny.model.encode_text(tiny.tokenizer(list(table["prompt"][:5]))).numpy()
    np.testing.assert_allclose(table["feature"][:5], five, rtol=0, atol=1e-5)


def test_reference_bank_features(tiny) -> None:
    table = encode_text_features(tiny, PromptConfig(bank="reference"), CLASSES)
    au = table["kind"] == "au"
    assert table["feature"][au].shape == (46, tiny.embed_dim)
    assert table["name"][au][-1] == "nostrils_compressedtongue_show"
