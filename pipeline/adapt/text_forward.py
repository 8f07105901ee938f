"""open_clip's text forward rebuilt from the model's parts, taking token EMBEDDINGS.

In: an open_clip ``CLIP`` (or a ``CustomTextCLIP`` whose text tower is open_clip's own
``TextTransformer``, or that ``TextTransformer`` itself). Out: a ``TextTower`` that maps
token embeddings [N, L, w] plus the read-out (EOS) position of each row to raw text
features [N, d], the same arithmetic as ``encode_text`` (token embedding, + positional
embedding, transformer with the causal mask, final norm, EOS gather, projection), so that
learnable context vectors can be put in place of some token embeddings.

Two paths, chosen by ``L``: the plain path runs the full context length (with the real
token embeddings it reproduces ``encode_text`` bit for bit on the CPU in float32); the
fast path runs only the first E tokens (E = the largest read-out index + 1), slicing the
positional embedding and the mask to E x E: with a causal mask nothing after the EOS token
can change the EOS feature, so the two agree to float rounding.

``TextTower(model)`` checks at start-up that every open_clip attribute it reads exists
(naming the one a future open_clip moved) and refuses, naming the reason, the towers where
the rebuilt forward is not valid: a Hugging Face text tower, no causal mask, a class token,
pooling other than the EOS / argmax token, a padding mask.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pipeline._torchvision_compat import ensure_torchvision_ops

ensure_torchvision_ops()  # open_clip imports torchvision: fix it first, in every process

import open_clip  # noqa: E402

# Attributes read from an open_clip CLIP (model.py) / TextTransformer (transformer.py).
CLIP_PARTS = ("token_embedding", "positional_embedding", "transformer", "attn_mask", "ln_final",
              "text_projection", "text_pool_type", "context_length")
TOWER_PARTS = ("token_embedding", "positional_embedding", "transformer", "attn_mask", "ln_final",
               "text_projection", "pool_type", "context_length", "cls_emb")
POOLS = ("argmax", "eos")  # both read the EOS token's feature out
PRECISIONS = ("fp32", "bf16", "fp16")


class UnsupportedTextTower(ValueError):
    """The model's text tower cannot be driven with token embeddings and a causal read-out."""


def _is_hf_tower(module: nn.Module) -> bool:
    try:
        from open_clip.hf_model import HFTextEncoder
    except ImportError:  # an open_clip without the module: fall back on the class name
        return type(module).__name__ == "HFTextEncoder"
    return isinstance(module, HFTextEncoder) or type(module).__name__ == "HFTextEncoder"


def _require(obj: nn.Module, names: tuple[str, ...], what: str) -> None:
    missing = [name for name in names if not hasattr(obj, name)]
    if missing:
        raise RuntimeError(
            f"{what} ({type(obj).__name__}) has no attribute {missing[0]!r} (missing: {missing}) under "
            f"open_clip {open_clip.__version__}: the rebuilt text forward in pipeline/adapt/text_forward.py "
            "was written against open_clip 3.3 and must be updated for this version"
        )


def _check_causal(mask: torch.Tensor | None, length: int, where: str) -> torch.Tensor:
    if mask is None:
        raise UnsupportedTextTower(
            f"{where} has no causal attention mask (bidirectional text tower): the EOS feature would "
            "depend on padding, so learnable context cannot be inserted"
        )
    if tuple(mask.shape) != (length, length):
        raise UnsupportedTextTower(f"{where} attention mask has shape {tuple(mask.shape)}, expected "
                                   f"({length}, {length}) for context length {length}")
    upper = torch.ones(length, length, dtype=torch.bool, device=mask.device).triu(1)
    causal = bool(torch.all(torch.isneginf(mask[upper]))) and bool(torch.all(mask[~upper] == 0))
    if not causal:
        raise UnsupportedTextTower(f"{where} attention mask is not the causal mask (-inf above the diagonal, "
                                   "0 elsewhere)")
    return mask


class TextTower(nn.Module):
    """The frozen parts of an open_clip text tower, driven by token embeddings."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        pool, eos_id, where = self._parts(model)
        if pool not in POOLS:
            raise UnsupportedTextTower(
                f"{where} pools text tokens with pool_type={pool!r}; only EOS / argmax-token pooling "
                f"{POOLS} reads the feature a causal prompt builds up"
            )
        if pool == "eos" and eos_id is None:
            raise UnsupportedTextTower(f"{where} pools at the EOS token but names no eos id")
        self.pool_type, self.eos_id = pool, eos_id
        self.context_length = int(self.positional_embedding.shape[0])
        self.width = int(self.positional_embedding.shape[1])
        if int(self.token_embedding.weight.shape[1]) != self.width:
            raise UnsupportedTextTower(f"{where} token width {self.token_embedding.weight.shape[1]} differs "
                                       f"from the positional embedding width {self.width}")
        self.causal_mask = _check_causal(self.causal_mask, self.context_length, where)
        proj = self.text_projection
        out = proj.out_features if isinstance(proj, nn.Linear) else (proj.shape[1] if proj is not None
                                                                       else self.width)
        self.embed_dim = int(out)

    def _parts(self, model: nn.Module) -> tuple[str, int | None, str]:
        """Take the parts off ``model``; (pool type, eos id, a name for messages)."""
        tower, where = model, type(model).__name__
        if hasattr(model, "text") and not hasattr(model, "token_embedding"):  # CustomTextCLIP
            tower, where = model.text, f"{type(model).__name__}.text ({type(model.text).__name__})"
            if _is_hf_tower(tower):
                raise UnsupportedTextTower(
                    f"{where} is a Hugging Face text tower (HFTextEncoder): its forward is not open_clip's "
                    "causal transformer with an EOS read-out, so learnable context cannot be inserted"
                )
        if hasattr(tower, "text_pool_type"):  # open_clip CLIP: the tower's parts sit on the model
            _require(tower, CLIP_PARTS, where)
            pool, eos_id = tower.text_pool_type, getattr(tower, "text_eos_id", None)
        else:
            _require(tower, TOWER_PARTS, where)
            if tower.cls_emb is not None:
                raise UnsupportedTextTower(f"{where} appends a class token (cls_emb) and pools it: the "
                                           "read-out is not the EOS token of the prompt")
            if getattr(tower, "use_pad_mask", False):
                raise UnsupportedTextTower(f"{where} uses a padding mask (bidirectional attention)")
            pool, eos_id = tower.pool_type, getattr(tower, "eos_id", None)
        if int(tower.positional_embedding.shape[0]) != int(tower.context_length):
            raise UnsupportedTextTower(
                f"{where} has {tower.positional_embedding.shape[0]} positions for a context length of "
                f"{tower.context_length} (a class token?)"
            )
        self.token_embedding = tower.token_embedding
        self.positional_embedding = tower.positional_embedding
        self.transformer = tower.transformer
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.causal_mask = tower.attn_mask
        return pool, eos_id, where

    @property
    def device(self) -> torch.device:
        return self.positional_embedding.device

    def cast_dtype(self) -> torch.dtype:
        getter = getattr(self.transformer, "get_cast_dtype", None)
        return getter() if getter is not None else self.positional_embedding.dtype

    def eos_index(self, ids: torch.Tensor) -> torch.Tensor:
        """Read-out position of each row of token ids [N, context_length], as the tower pools."""
        if self.pool_type == "argmax":
            return ids.argmax(dim=-1)
        return (ids == self.eos_id).int().argmax(dim=-1)

    @torch.no_grad()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [N, L] -> frozen token embeddings [N, L, w] (as ``encode_text`` casts them)."""
        return self.token_embedding(ids.to(self.device)).to(self.cast_dtype())

    def forward(self, embeddings: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        """Token embeddings [N, L, w] (L <= context length: L < context length is the fast
        path) and read-out positions [N] (< L) -> raw text features [N, d]."""
        n, length, width = embeddings.shape
        if width != self.width or not 1 <= length <= self.context_length:
            raise ValueError(f"token embeddings must be [N, L <= {self.context_length}, {self.width}], got "
                             f"{list(embeddings.shape)}")
        if eos.shape != (n,) or int(eos.max()) >= length:
            raise ValueError(f"read-out positions must be [{n}] and < {length}, got shape {list(eos.shape)} "
                             f"max {int(eos.max())}")
        cast = self.cast_dtype()
        x = embeddings.to(cast) + self.positional_embedding[:length].to(cast)
        x = self.transformer(x, attn_mask=self.causal_mask[:length, :length])
        x = self.ln_final(x)
        x = x[torch.arange(n, device=x.device), eos.to(x.device)]
        proj = self.text_projection
        if isinstance(proj, nn.Linear):
            return proj(x)
        return x if proj is None else x @ proj


def text_autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for the text forward on CUDA (``precision`` bf16 / fp16); fp32 and the CPU: none."""
    if precision not in PRECISIONS:
        raise ValueError(f"text precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
