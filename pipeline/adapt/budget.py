"""How many target subjects share one text forward of CLIP-AUTT.

In: the ``adapt.subjects_per_batch`` setting (0 = auto), the subjects' inputs, the text
tower, the prompt tokens and the ``AdaptConfig``. Out: the subjects per forward. A set value
is used as it is. Auto: on CUDA, as many as half the device's free memory holds by an
estimate of one subject's footprint (the text forward's activations kept for the backward,
and its clips through the head), at most ``MAX_AUTO``; on CPU, ``CPU_AUTO`` (a shared forward
saves per-call overhead there, not memory bandwidth; see docs/benchmarks.md). A CUDA
out-of-memory error still halves the batch (``AdaptStage``), so the estimate need not be exact.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_AUTO = 64
CPU_AUTO = 4
FLOATS_PER_TOKEN_LAYER = 24  # q, k, v, attention out, 4x MLP in and out, norms, residuals
FREE_SHARE = 0.5  # of the free device memory, the rest left to fragmentation and neighbours


def subject_bytes(n_clip_values: int, tower, tokens, cfg) -> int:
    """An estimate of one subject's memory in a text forward and backward, in bytes."""
    length = int(tokens.eos.max()) + 1 if cfg.fast else tower.context_length
    width, (layers, heads) = tower.width, _depth(tower)
    per_value = 2 if cfg.text_precision in ("bf16", "fp16") else 4
    k = tokens.n_prompts
    acts = k * length * layers * (FLOATS_PER_TOKEN_LAYER * width + heads * length) * per_value
    clips = n_clip_values * 4 * 6  # the clips, their windows and the head's activations
    return acts + clips


def subjects_per_forward(setting: int, inputs: Sequence, tower, tokens, cfg) -> int:
    n = len(inputs)
    if setting > 0:
        return max(1, min(setting, n))
    device = tower.device
    if device.type != "cuda":
        return max(1, min(CPU_AUTO, n))
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    values = max(_values(x) for x in inputs)
    each = subject_bytes(values, tower, tokens, cfg)
    return max(1, min(n, MAX_AUTO, int(free * FREE_SHARE // max(each, 1))))


def _values(x) -> int:
    if x.clips is not None:
        return int(x.clips.size)
    return int(sum(s.size for s in x.strided or ()))


def _depth(tower) -> tuple[int, int]:
    """(layers, attention heads) of an open_clip text transformer (defaults: ViT-B/32's)."""
    blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
    if not blocks:
        return 12, 8
    return len(blocks), int(getattr(getattr(blocks[0], "attn", None), "num_heads", 8))
