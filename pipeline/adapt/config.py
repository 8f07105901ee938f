"""Configuration of CLIP-AUTT (config section ``adapt``).

In: values from YAML / ``key=value`` overrides. Out: a frozen, validated ``AdaptConfig``.
No torch here, so a config loads fast. Checks that need the data (the window against the
clip length) happen when adaptation starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

TEXT_PRECISIONS = ("fp32", "bf16", "fp16")
METHOD = "clip-autt"  # the predictions tables' method names (schemas.tables.METHODS)
REFERENCE_METHOD = "clip-autt-reference"
ZERO_STEP_METHOD = "clip-au+windows"  # CLIP-AU + window selection, 0 steps


@dataclass(frozen=True)
class AdaptConfig:
    steps: int = 10  # AdamW updates of the context per subject (0: CLIP-AU + window selection)
    window: int = 16  # L: frames per scored window (L = T: no window selection; StressID 6)
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    reference: bool = False  # clip-autt-reference: reproduce the public code (method.md)
    fast: bool = True  # run the text tower on the first E tokens only (within 1e-5 of the plain path)
    subjects_per_batch: int = 1  # subjects whose contexts share one text forward (losses summed)
    chunk_size: int = 0  # clips per head forward, gradients accumulated; 0 = all clips at once
    text_precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # text-forward autocast on CUDA; CPU: fp32
    clip_len: int = 20  # T of the reference option's random segments (the default uses given clips)
    n_ctx: int = 4  # context vectors of the reference option's prompt (the template sets the default's)
    seed: int = 1999  # reference option: context init N(0, 0.02) and the per-step segment draws

    def __post_init__(self) -> None:
        for name in ("window", "subjects_per_batch", "clip_len", "n_ctx"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"adapt.{name} must be a positive integer, got {value!r}")
        for name in ("steps", "chunk_size", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"adapt.{name} must be an integer >= 0, got {value!r}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"adapt.lr must be > 0 and adapt.weight_decay >= 0, got {self.lr!r}, "
                             f"{self.weight_decay!r}")
        if self.text_precision not in TEXT_PRECISIONS:
            raise ValueError(f"adapt.text_precision must be one of {TEXT_PRECISIONS}, got "
                             f"{self.text_precision!r}")
        if self.reference and self.window > self.clip_len:
            raise ValueError(f"adapt.window {self.window} is longer than adapt.clip_len {self.clip_len}")

    @property
    def method(self) -> str:
        """The method name its final predictions are filed under."""
        return REFERENCE_METHOD if self.reference else METHOD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ADAPT_METHODS = (METHOD, REFERENCE_METHOD, ZERO_STEP_METHOD, "tta-cap-frozen", "tpt")
MODEL_METHODS = (METHOD, REFERENCE_METHOD, ZERO_STEP_METHOD)  # adapt a trained CLIP-AU head


@dataclass(frozen=True)
class AdaptSection:
    """The ``adapt`` config section: which methods adapt every target subject, and how.

    The number of steps and the window length come from ``protocol.tta_steps`` and
    ``protocol.window``; these settings and those are part of every unit's fingerprint,
    except the runtime ones (``device``, ``max_retries``, ``gpus_per_unit``)."""

    methods: tuple[str, ...] = (METHOD, ZERO_STEP_METHOD, "tta-cap-frozen", "tpt")
    lr: float = 1e-3  # AdamW learning rate of the context
    weight_decay: float = 1e-4  # AdamW weight decay
    fast: bool = True  # truncated causal text path (within 1e-5 of the full context)
    chunk_size: int = 0  # clips per head forward, gradients accumulated; 0 = all at once
    subjects_per_batch: int = 0  # subjects sharing a text forward; 0 = auto (GPU: memory budget)
    text_precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # text forward on CUDA; CPU: fp32
    clip_len: int = 20  # clip-autt-reference: frames of its random segments
    n_ctx: int = 4  # clip-autt-reference: context vectors of its prompt
    device: str = "auto"  # workers' torch device: auto (cuda where the worker has one) | cpu | cuda
    gpus_per_unit: float = 0.25  # fraction of a GPU per adaptation worker where the cluster has GPUs
    max_retries: int = 2  # a unit that fails is retried this many times, then recorded failed

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in ADAPT_METHODS]
        if bad or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"adapt.methods must be distinct names from {ADAPT_METHODS}, got "
                             f"{list(self.methods)}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"adapt.lr must be > 0 and adapt.weight_decay >= 0, got {self.lr!r}, "
                             f"{self.weight_decay!r}")
        for name in ("clip_len", "n_ctx"):
            if getattr(self, name) < 1:
                raise ValueError(f"adapt.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("chunk_size", "max_retries", "subjects_per_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"adapt.{name} must be an integer >= 0, got {value!r}")
        if self.text_precision not in TEXT_PRECISIONS:
            raise ValueError(f"adapt.text_precision must be one of {TEXT_PRECISIONS}, got "
                             f"{self.text_precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"adapt.device must be auto, cpu or cuda, got {self.device!r}")
        if not 0 < self.gpus_per_unit <= 1:
            raise ValueError(f"adapt.gpus_per_unit must be in (0, 1], got {self.gpus_per_unit!r}")

    def library_config(self, method: str, steps: int, window: int, seed: int) -> AdaptConfig:
        """The ``AdaptConfig`` of one CLIP-AUTT unit."""
        return AdaptConfig(steps=0 if method == ZERO_STEP_METHOD else steps, window=window, lr=self.lr,
                           weight_decay=self.weight_decay, reference=method == REFERENCE_METHOD,
                           fast=self.fast, chunk_size=self.chunk_size, text_precision=self.text_precision,
                           clip_len=self.clip_len, n_ctx=self.n_ctx, seed=seed)
