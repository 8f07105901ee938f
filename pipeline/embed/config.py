"""Configuration of the frozen CLIP embedding stage (config section ``embed``).

In: values from YAML / ``key=value`` overrides. Out: a frozen, validated ``EmbedConfig``.
Only the cheap checks live here (no torch import, so loading a config stays fast); whether
the architecture exists and where the weights come from is settled by ``load_backbone``,
which fails before any data is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DTYPES = ("float16", "float32")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("amp_fp16", "amp_bf16", "fp32")


@dataclass(frozen=True)
class EmbedConfig:
    model: str = "ViT-B-32"  # open_clip architecture name, or "autt-tiny" (test/demo size)
    weights: str = "openai"  # "random" | weights file / folder (path or URL) | pretrained tag
    seed: int = 0  # seeds random init, so "random" weights are reproducible
    quick_gelu: bool = False  # force QuickGELU (OpenAI weights given as a file need it)
    dtype: Literal["float16", "float32"] = "float16"  # how embeddings are stored
    batch_size: int = 64  # crops per forward pass
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    precision: Literal["amp_fp16", "amp_bf16", "fp32"] = "amp_fp16"  # GPU autocast; CPU is fp32
    cache_dir: str | None = None  # where pretrained tags are looked up (None = library default)
    mixed_numerics: bool = False  # allow one table to mix vectors computed on cpu/fp32 and cuda/amp

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError(f"embed.model must name an architecture, got {self.model!r}")
        if not self.weights.strip():
            raise ValueError(
                f"embed.weights must be 'random', a path or a tag, got {self.weights!r}"
            )
        if self.seed < 0:
            raise ValueError(f"embed.seed must be >= 0, got {self.seed}")
        if self.dtype not in DTYPES:
            raise ValueError(f"embed.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError(f"embed.batch_size must be >= 1, got {self.batch_size}")
        if self.device not in DEVICES:
            raise ValueError(f"embed.device must be one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"embed.precision must be one of {PRECISIONS}, got {self.precision!r}")
