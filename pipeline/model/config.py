"""The ``train`` config section: how CLIP-AU models are trained and how many (light module:
no torch, so that config loading stays cheap).

In: YAML / ``train.key=value`` overrides. Out: a frozen ``TrainSection``; the training job
turns it, with the protocol's clip settings, into ``pipeline.model.train.TrainConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SPLITS = ("fixed", "kfold", "loso")


@dataclass(frozen=True)
class TrainSection:
    epochs: int = 10  # passes over all training clips (the papers: 20 for StressID)
    batch_size: int = 8  # clips per AdamW step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    seeds: tuple[int, ...] = (1999,)  # one model per seed (and per fold)
    validation: Literal["subjects", "videos"] = "subjects"  # hold out source subjects or videos
    val_fraction: float = 0.2  # share of subjects (or of each subject's videos) held out
    temporal: Literal["conv", "tcn-transformer"] = "conv"  # the head's temporal module
    device: str = "cpu"  # torch device of the head (it is small: the CPU is fine)
    max_retries: int = 2  # a unit that fails is retried this many times, then recorded failed

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not self.seeds:
            raise ValueError("train.seeds must name at least one seed, got ()")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"train.seeds has duplicates: {self.seeds}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"train.lr must be > 0 and train.weight_decay >= 0, got {self.lr}, "
                             f"{self.weight_decay}")
        if self.validation not in ("subjects", "videos"):
            raise ValueError(f"train.validation must be subjects or videos, got {self.validation!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"train.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.temporal not in ("conv", "tcn-transformer"):
            raise ValueError(f"train.temporal must be conv or tcn-transformer, got {self.temporal!r}")
        if self.max_retries < 0:
            raise ValueError(f"train.max_retries must be >= 0, got {self.max_retries}")
