"""A head's weights in the public reference code's checkpoint layout (a dict of state dicts,
``temporal_proj`` included though its forward never uses it), for import tests."""

from __future__ import annotations


def to_reference(flat: dict, d: int) -> dict:
    """This project's head state dict -> the reference layout (``torch.save`` it)."""
    import torch

    pairs = [(i, j, w) for i, j in ((0, 1), (2, 2)) for w in ("weight", "bias")]
    return {"text_adapter": {f"{i}.{w}": flat[f"au_adapter.fc{j}.{w}"] for i, j, w in pairs},
            "temporal": {"weight": flat["temporal.conv.weight"], "bias": flat["temporal.conv.bias"]},
            "temporal_proj": {"weight": torch.zeros(d, d)},
            "temporal_classifier": {f"{i}.{w}": flat[f"classifier.fc{j}.{w}"] for i, j, w in pairs}}
