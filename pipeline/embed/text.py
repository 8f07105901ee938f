"""Text features of the AU and class prompts, computed once per backbone.

In: a ``Backbone``, a ``PromptConfig`` and the ordered class list. Out: a dict of equal-length
columns: kind ('au' | 'class' | 'class_neg'), index, name (phrase or class), code (FACS code
or None), prompt (the full text), feature (float32 (n, d), raw text-tower output, not
normalised). Features are computed in float32 even on a GPU: they are few, and the head
and CLIP-AUTT's step-0 invariant compare against them bit for bit. The AU bank is encoded
as one batch of exactly its K prompts and each class-prompt kind as a batch of its own, so
that CLIP-AUTT's plain text path can repeat the very same arithmetic.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.embed.backbone import Backbone
from pipeline.embed.prompts import PromptConfig, prompt_rows


@torch.inference_mode()
def encode_texts(backbone: Backbone, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """float32 (n, d) raw ``encode_text`` features of ``texts``, autocast off."""
    out = np.zeros((len(texts), backbone.embed_dim), dtype=np.float32)
    device = backbone.device
    for start in range(0, len(texts), batch_size):
        tokens = backbone.tokenizer(texts[start : start + batch_size]).to(device)
        with torch.autocast(device.type, enabled=False):
            features = backbone.model.encode_text(tokens, normalize=False)
        out[start : start + len(tokens)] = features.float().cpu().numpy()
    return out


def encode_text_features(
    backbone: Backbone, prompt_cfg: PromptConfig, classes: list[str]
) -> dict[str, np.ndarray]:
    """Every prompt of ``prompt_cfg`` and ``classes`` with its float32 feature."""
    rows = prompt_rows(prompt_cfg, classes, backbone.context_length, backbone.tokenizer)
    kinds, indices, names, codes, prompts = zip(*rows, strict=True)
    kind_arr = np.array(kinds, dtype=object)
    features = np.zeros((len(prompts), backbone.embed_dim), dtype=np.float32)
    for kind in dict.fromkeys(kinds):  # one batch per kind, in the order the rows list them
        idx = np.flatnonzero(kind_arr == kind)
        features[idx] = encode_texts(backbone, [prompts[i] for i in idx], batch_size=len(idx))
    return {
        "kind": kind_arr,
        "index": np.array(indices, dtype=np.int32),
        "name": np.array(names, dtype=object),
        "code": np.array(codes, dtype=object),
        "prompt": np.array(prompts, dtype=object),
        "feature": features,
    }
