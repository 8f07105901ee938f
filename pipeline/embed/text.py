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
import pyarrow as pa
import torch

from pipeline.embed.backbone import Backbone
from pipeline.embed.prompts import PromptConfig, prompt_rows
from schemas import text_features_schema

TEXT_UNIT = "prompts"  # the text features table of a backbone is one unit of work


def text_table(backbone_id: str) -> str:
    return f"text_features/{backbone_id}"


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


class TextFeaturesStage:
    """The one-unit stage behind OUT/text_features/<backbone id>/ (run on the driver, which
    holds the backbone already)."""

    name = "text_features"
    failure_statuses: frozenset[str] = frozenset()

    def __init__(self, backbone: Backbone, prompt_cfg: PromptConfig, classes: list[str]):
        self.backbone, self.prompt_cfg, self.classes = backbone, prompt_cfg, list(classes)
        self.outputs = (text_table(backbone.backbone_id),)

    def schema(self, table: str) -> pa.Schema:
        return text_features_schema(self.backbone.embed_dim)

    def metadata(self, table: str) -> dict[str, str]:
        import json

        bb = self.backbone
        return {"backbone_id": bb.backbone_id, "weights_digest": bb.weights_digest,
                "classes": json.dumps(self.classes)}

    def load(self, ws, unit: str) -> dict[str, np.ndarray]:
        return {"sample_id": np.zeros(0, dtype=object)}  # nothing is read: prompts come from config

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, dict]:
        return {self.outputs[0]: encode_text_features(self.backbone, self.prompt_cfg, self.classes)}
