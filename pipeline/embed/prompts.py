"""AU and class prompts (config section ``prompts``).

In: a ``PromptConfig`` and the ordered class list. Out: the prompt rows (kind, index, name,
FACS code, full text) that ``text.encode_text_features`` turns into text features.

The default bank holds the K = 47 (phrase, FACS code) pairs of method.md, each put into one
template for the whole bank. The template's prefix (the words before ``{phrase}``) must be
exactly ``n_ctx`` CLIP tokens: CLIP-AUTT initialises its learnable context from those
tokens, which is what makes its step 0 equal CLIP-AU. The reference bank (off by default)
reproduces the public code: K = 46 underscore phrases with commas dropped, no template,
and the last two fused into one string by a missing comma. A prompt longer than the text
tower's context would be truncated silently by the tokenizer, so it is an error here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.embed import tokens

DEFAULT_CONTEXT_LENGTH = 77  # CLIP's text context; load time re-checks the real tower's

# (phrase, FACS code), method.md "AU prompt bank", in its order. None = no FACS code.
AU_BANK: tuple[tuple[str, str | None], ...] = (
    ("inner eyebrows raised", "AU1"),
    ("outer eyebrows raised", "AU2"),
    ("eyebrows lowered and pulled together", "AU4"),
    ("upper eyelids lifted", "AU5"),
    ("cheeks raised and eye corners tightened", "AU6"),
    ("eyelids tightened", "AU7"),
    ("nose wrinkled", "AU9"),
    ("upper lip lifted", "AU10"),
    ("nasolabial folds deepened", "AU11"),
    ("lip corners pulled up in a smile", "AU12"),
    ("cheeks puffed upward", "AU13"),
    ("cheek dimples formed, lip corners tightened laterally", "AU14"),
    ("lip corners pulled down", "AU15"),
    ("lower lip pulled down", "AU16"),
    ("chin pushed up, lower lip bulged", "AU17"),
    ("lips puckered forward", "AU18"),
    ("lips stretched horizontally", "AU20"),
    ("lips funneled, rounded and protruded", "AU22"),
    ("lips pressed together and tightened", "AU23"),
    ("lips strongly pressed", "AU24"),
    ("lips slightly parted", "AU25"),
    ("jaw lowered, mouth opened", "AU26"),
    ("mouth widely stretched open", "AU27"),
    ("lips sucked into mouth", "AU28"),
    ("upper eyelids drooping", "AU41"),
    ("eyes slitted, narrow eye opening", "AU42"),
    ("eyes fully closed", "AU43"),
    ("squinting, lower and upper lids compressed", "AU44"),
    ("blink, rapid eyelid closure", "AU45"),
    ("one eye closed, wink", "AU46"),
    ("head turn left", "AU51"),
    ("head turn right", "AU52"),
    ("head tilt up", "AU53"),
    ("head tilt down", "AU54"),
    ("eyes turn left", "AU61"),
    ("eyes turn right", "AU62"),
    ("eyes look up", "AU63"),
    ("eyes look down", "AU64"),
    ("jaw thrust forward", "AU29"),
    ("jaw clenched", "AU31"),
    ("lip bite", "AU32"),
    ("lip wipe with tongue", "AU37"),
    ("lick lips", None),
    ("cheek blow", "AU33"),
    ("nostrils dilated", "AU38"),
    ("nostrils compressed", "AU39"),
    ("tongue show", "AU19"),
)


def _reference_bank() -> tuple[tuple[str, str | None], ...]:
    words = [(p.replace(",", "").replace(" ", "_"), c) for p, c in AU_BANK]
    (last_p, last_c), (fused_p, fused_c) = words[-2], words[-1]
    # The public code lost the comma between the last two phrases: Python joined them.
    return (*words[:-2], (last_p + fused_p, f"{last_c}+{fused_c}"))


REFERENCE_BANK = _reference_bank()
BANKS = {"default": AU_BANK, "reference": REFERENCE_BANK}


def count_tokens(text: str, tokenizer: Any = None) -> int:
    """Tokens of ``text`` including start and end markers: with ``tokenizer``'s ``encode``
    when given (the loaded tower's), else CLIP's BPE counted without torch, so that a
    ``PromptConfig`` validates while a config loads."""
    if hasattr(tokenizer, "encode"):
        return len(tokenizer.encode(text)) + tokens.MARKERS
    return tokens.count_tokens(text)


@dataclass(frozen=True)
class PromptConfig:
    bank: Literal["default", "reference"] = "default"  # method.md's 47 | public code's 46
    template: str = "a human face with {phrase}."  # one AU template (unused by the reference bank)
    n_ctx: int = 4  # learnable context tokens = CLIP tokens of the template's prefix
    class_template: str = "a person with an expression of {class}."  # zero-shot class prompt
    neg_class_template: str = "a person with an expression of no {class}."  # negative prompt

    def __post_init__(self) -> None:
        if self.bank not in BANKS:
            raise ValueError(f"prompts.bank must be one of {tuple(BANKS)}, got {self.bank!r}")
        if self.n_ctx < 1:
            raise ValueError(f"prompts.n_ctx must be >= 1, got {self.n_ctx}")
        for name, slot in (("template", "{phrase}"), ("class_template", "{class}"),
                           ("neg_class_template", "{class}")):
            value = getattr(self, name)
            if value.count(slot) != 1:
                raise ValueError(f"prompts.{name} must contain {slot} exactly once, got {value!r}")
        if self.bank == "default":
            prefix = template_prefix(self)
            got = count_tokens(prefix) - 2
            if got != self.n_ctx:
                raise ValueError(
                    f"prompts.template prefix {prefix!r} of {self.template!r} tokenizes to {got} "
                    f"tokens, but prompts.n_ctx is {self.n_ctx}"
                )
        check_lengths(au_prompts(self), DEFAULT_CONTEXT_LENGTH)


def template_prefix(cfg: PromptConfig) -> str:
    """The words before ``{phrase}``: the text CLIP-AUTT's context starts from."""
    return cfg.template.split("{phrase}")[0].strip()


def au_bank(cfg: PromptConfig) -> tuple[tuple[str, str | None], ...]:
    return BANKS[cfg.bank]


def au_prompts(cfg: PromptConfig) -> list[str]:
    if cfg.bank == "reference":  # the public code encodes the bare phrases
        return [phrase for phrase, _ in REFERENCE_BANK]
    return [cfg.template.replace("{phrase}", phrase) for phrase, _ in AU_BANK]


def class_prompts(cfg: PromptConfig, classes: list[str], negative: bool = False) -> list[str]:
    template = cfg.neg_class_template if negative else cfg.class_template
    return [template.replace("{class}", name) for name in classes]


def check_lengths(prompts: list[str], context_length: int, tokenizer: Any = None) -> None:
    """ValueError naming the first prompt that does not fit ``context_length`` tokens."""
    for prompt in prompts:
        n = count_tokens(prompt, tokenizer)
        if n > context_length:
            raise ValueError(f"prompt {prompt!r} is {n} tokens, over the text tower's context "
                             f"length of {context_length}")


def prompt_rows(
    cfg: PromptConfig, classes: list[str], context_length: int = DEFAULT_CONTEXT_LENGTH,
    tokenizer: Any = None,
) -> list[tuple[str, int, str, str | None, str]]:
    """All prompts as (kind, index, name, code, prompt), checked against the context length.

    kind is 'au' (index = position in the bank), 'class' or 'class_neg' (index = position
    in the class list).
    """
    if len(set(classes)) != len(classes) or any(not c.strip() for c in classes):
        raise ValueError(f"classes must be distinct, non-empty names, got {classes}")
    pairs = zip(au_bank(cfg), au_prompts(cfg), strict=True)
    rows = [("au", i, phrase, code, prompt) for i, ((phrase, code), prompt) in enumerate(pairs)]
    for kind, negative in (("class", False), ("class_neg", True)):
        pairs = zip(classes, class_prompts(cfg, classes, negative), strict=True)
        rows += [(kind, i, name, None, p) for i, (name, p) in enumerate(pairs)]
    check_lengths([row[4] for row in rows], context_length, tokenizer)
    return rows
