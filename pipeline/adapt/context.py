"""Prompts with learnable context vectors, through the rebuilt text forward.

In: a ``TextTower``, a tokenizer (open_clip's: list[str] -> LongTensor [n, context length])
and the prompt texts. Out: ``PromptTokens`` (the frozen token ids and read-out positions of
K prompts) and ``ContextPrompts``, which turns context tensors [S, K or 1, n_ctx, w] (S
contexts, e.g. one per subject; 1 = one context shared by every prompt) into raw text
features [S, K, d] in one forward.

Two layouts:
- template (method.md "CLIP-AUTT"): prompt k is ``[SOS] prefix(n_ctx tokens) phrase_k suffix
  [EOS]``; the context replaces the prefix tokens and starts as their token embeddings, so
  at the start the features are exactly ``encode_text``'s;
- reference (method.md "Reference option"): ``[SOS] ctx(n_ctx) emb(token id 0)`` then zero
  vectors, read out at the EOS index of ``phrase.replace("_", " ") + "."`` tokenized: the
  phrase itself never enters the text tower, only its length does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from pipeline.adapt.text_forward import TextTower

Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass(frozen=True)
class PromptTokens:
    """Token ids of K prompts and where each is read out; no learnable state."""

    ids: torch.Tensor  # [K, context length] token ids (LongTensor, CPU)
    eos: torch.Tensor  # [K] read-out position of each prompt
    n_ctx: int  # context vectors per prompt (they sit at positions 1..n_ctx)
    layout: Literal["template", "reference"]  # see the module docstring

    def __post_init__(self) -> None:
        if self.ids.ndim != 2 or self.eos.shape != (self.ids.shape[0],) or self.n_ctx < 1:
            raise ValueError(f"prompt tokens must be ids [K, L], eos [K] and n_ctx >= 1, got ids "
                             f"{list(self.ids.shape)}, eos {list(self.eos.shape)}, n_ctx {self.n_ctx}")

    @property
    def n_prompts(self) -> int:
        return int(self.ids.shape[0])


def _tokenize(tokenizer: Tokenizer, texts: Sequence[str], tower: TextTower) -> torch.Tensor:
    ids = torch.as_tensor(tokenizer(list(texts)), dtype=torch.long).cpu()
    if ids.shape != (len(texts), tower.context_length):
        raise ValueError(f"the tokenizer made {list(ids.shape)} of {len(texts)} prompts; the text tower needs "
                         f"[{len(texts)}, {tower.context_length}]")
    full = torch.nonzero(ids[:, -1] != 0).flatten()
    if len(full):  # open_clip's tokenizer truncates silently, ending the row with EOS
        raise ValueError(f"prompt {texts[int(full[0])]!r} fills the whole context of {tower.context_length} "
                         "tokens: it was probably truncated")
    return ids


def template_tokens(tower: TextTower, tokenizer: Tokenizer, prompts: Sequence[str], n_ctx: int) -> PromptTokens:
    """Full prompts sharing one n_ctx-token prefix (the template's words before the phrase)."""
    if not prompts:
        raise ValueError("no prompts given")
    ids = _tokenize(tokenizer, prompts, tower)
    prefix = ids[:, 1:1 + n_ctx]
    differ = torch.nonzero(torch.any(prefix != prefix[:1], dim=1)).flatten()
    if len(differ):
        raise ValueError(f"prompt {prompts[int(differ[0])]!r} does not start with the same {n_ctx} tokens as "
                         f"{prompts[0]!r}: the context replaces one shared template prefix")
    eos = tower.eos_index(ids)
    short = torch.nonzero(eos <= n_ctx + 1).flatten()
    if len(short):
        raise ValueError(f"prompt {prompts[int(short[0])]!r} has nothing after its {n_ctx}-token prefix")
    return PromptTokens(ids=ids, eos=eos, n_ctx=n_ctx, layout="template")


def reference_tokens(tower: TextTower, tokenizer: Tokenizer, phrases: Sequence[str],
                     n_ctx: int = 4) -> PromptTokens:
    """The reference code's prompts: read-out at the EOS of ``phrase.replace("_", " ") + "."``."""
    if not phrases:
        raise ValueError("no phrases given")
    ids = _tokenize(tokenizer, [p.replace("_", " ") + "." for p in phrases], tower)
    if n_ctx + 2 > tower.context_length:
        raise ValueError(f"n_ctx {n_ctx} + SOS + token 0 exceed the context length {tower.context_length}")
    return PromptTokens(ids=ids, eos=tower.eos_index(ids), n_ctx=n_ctx, layout="reference")


class ContextPrompts:
    """The frozen token embeddings around the context, and the forward through the tower."""

    def __init__(self, tower: TextTower, tokens: PromptTokens, fast: bool) -> None:
        self.tower, self.tokens = tower, tokens
        dev = tower.device
        n, k = tokens.n_ctx, tokens.n_prompts
        self.eos = tokens.eos.to(dev)
        if tokens.layout == "template":
            base = tower.embed(tokens.ids)  # [K, context length, w]
            self.start = base[:, 1:1 + n].clone()
            self.sos, self.rest = base[:, :1], base[:, 1 + n:]
        else:
            sos = tower.embed(tokens.ids[:, :1])  # every row starts with the same SOS id
            zero_id = tower.embed(torch.zeros(k, 1, dtype=torch.long))
            pad = torch.zeros(k, tower.context_length - n - 2, tower.width, dtype=sos.dtype, device=dev)
            self.start, self.sos, self.rest = None, sos, torch.cat([zero_id, pad], dim=1)
        # Fast path: each prompt runs only up to its read-out position (the causal mask makes
        # later tokens irrelevant to it), prompts of similar length in one forward each;
        # plain path: the whole context, every prompt in one forward.
        self.length = int(self.eos.max()) + 1 if fast else tower.context_length
        self.length = max(self.length, n + 1)  # keep SOS + context even if a read-out comes earlier
        ends = (tokens.eos + 1).clamp(min=n + 1).tolist()
        self.buckets = length_buckets(ends, MAX_BUCKETS) if fast else [(list(range(k)), self.length)]

    def initial_context(self, shared: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """[K or 1, n_ctx, w] starting context: the template prefix's token embeddings (one
        copy for all prompts when ``shared``), or N(0, 0.02) shared (reference layout)."""
        if self.start is None:
            shape = (1, self.tokens.n_ctx, self.tower.width)
            init = torch.randn(shape, generator=generator, dtype=torch.float32) * 0.02
            return init.to(device=self.tower.device, dtype=self.sos.dtype)
        return self.start[:1].clone() if shared else self.start.clone()

    def embeddings(self, ctx: torch.Tensor) -> torch.Tensor:
        """Context [S, K or 1, n_ctx, w] -> token embeddings [S * K, length, w]."""
        k, n, w = self.tokens.n_prompts, self.tokens.n_ctx, self.tower.width
        if ctx.ndim != 4 or ctx.shape[1] not in (1, k) or ctx.shape[2:] != (n, w):
            raise ValueError(f"context must be [S, {k} or 1, {n}, {w}], got {list(ctx.shape)}")
        s = ctx.shape[0]
        ctx = ctx.to(self.sos.dtype).expand(s, k, n, w)
        tail = self.length - 1 - n
        sos = self.sos.unsqueeze(0).expand(s, -1, -1, -1)
        rest = self.rest[:, :tail].unsqueeze(0).expand(s, -1, -1, -1)
        return torch.cat([sos, ctx, rest], dim=2).reshape(s * k, self.length, w)

    def features(self, ctx: torch.Tensor) -> torch.Tensor:
        """Context [S, K or 1, n_ctx, w] -> raw text features [S, K, d] (one forward per
        length bucket)."""
        s, k = ctx.shape[0], self.tokens.n_prompts
        tokens = self.embeddings(ctx).reshape(s, k, self.length, -1)
        if len(self.buckets) == 1:
            out = self.tower(tokens.reshape(s * k, self.length, -1), self.eos.repeat(s))
            return out.reshape(s, k, -1)
        parts, order = [], []
        for rows, length in self.buckets:
            idx = torch.as_tensor(rows, device=tokens.device)
            x = tokens[:, idx, :length].reshape(s * len(rows), length, -1)
            parts.append(self.tower(x, self.eos[idx].repeat(s)).reshape(s, len(rows), -1))
            order += rows
        out = torch.cat(parts, dim=1)
        back = torch.empty(k, dtype=torch.long, device=out.device)
        back[torch.as_tensor(order, device=out.device)] = torch.arange(k, device=out.device)
        return out[:, back]


MAX_BUCKETS = 3  # forwards per step on the fast path: fewer padded tokens, a few more calls


def length_buckets(ends: list[int], max_buckets: int) -> list[tuple[list[int], int]]:
    """Split prompts (token counts ``ends``) into at most ``max_buckets`` groups of similar
    length, each run at its longest member's length, so that the padded tokens in all are
    fewest (exact, by dynamic programming over the sorted distinct lengths).
    Out: [(prompt indices, length)] by increasing length."""
    lengths = sorted(set(ends))
    count = {n: ends.count(n) for n in lengths}
    m = len(lengths)
    # cost[i][j]: prompts with lengths[i..j] run at lengths[j]
    cost = [[sum(count[lengths[t]] for t in range(i, j + 1)) * lengths[j] if j >= i else 0
             for j in range(m)] for i in range(m)]
    inf = float("inf")
    best = [[inf] * (m + 1) for _ in range(max_buckets + 1)]  # best[b][j]: first j lengths in b groups
    cut = [[0] * (m + 1) for _ in range(max_buckets + 1)]
    best[0][0] = 0
    for b in range(1, max_buckets + 1):
        for j in range(1, m + 1):
            for i in range(j):
                c = best[b - 1][i] + cost[i][j - 1]
                if c < best[b][j]:
                    best[b][j], cut[b][j] = c, i
    b = min(range(1, max_buckets + 1), key=lambda x: (best[x][m], x))
    groups, j = [], m
    while b:
        i = cut[b][j]
        members = set(lengths[i:j])
        groups.append(([p for p, n in enumerate(ends) if n in members], lengths[j - 1]))
        j, b = i, b - 1
    return groups[::-1]
