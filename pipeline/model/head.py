"""The CLIP-AU head (method.md "CLIP-AU"), for any embedding width d, K AUs and C classes.

In: raw (unnormalised) frame embeddings [B, T, d] of clips and raw AU text features [K, d].
Out: ``HeadOutput``: class logits [B, C], AU similarities s = 5 v a^T [B, K], unit clip
embeddings v [B, d] and, on request, per-frame AU activations 5 normalise(h_t) a^T [B, T, K].

The pieces CLIP-AUTT needs are public methods: ``au_features`` (text features -> unit AU
features a, so an adapted text feature can go in), ``forward_au`` (clips + ready AU
features) and ``window_logits`` (each L-frame window of a clip classified on its own).
``REFERENCE_NAMES`` maps the public reference code's parameter names onto this module's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

TEMPORALS = ("conv", "tcn-transformer")


@dataclass(frozen=True)
class HeadConfig:
    embed_dim: int  # d: width of the frame and text embeddings (512 for ViT-B/32)
    n_aus: int  # K: AU prompts in the bank (47 default, 46 reference)
    n_classes: int  # C: classes, in the declared class order
    temporal: Literal["conv", "tcn-transformer"] = "conv"  # temporal module over the T frames
    adapter_hidden: int = 512  # hidden width of the AU text adapter, whatever d is
    classifier_hidden: int = 256  # hidden width of the classifier over the K similarities
    au_scale: float = 5.0  # s = au_scale * cos(v, a); also scales per-frame activations
    heads: int = 4  # attention heads of the tcn-transformer's encoder layer
    dropout: float = 0.0  # dropout inside the tcn-transformer's encoder layer

    def __post_init__(self) -> None:
        for name in ("embed_dim", "n_aus", "n_classes", "adapter_hidden", "classifier_hidden", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"head.{name} must be a positive integer, got {value!r}")
        if self.temporal not in TEMPORALS:
            raise ValueError(f"head.temporal must be one of {TEMPORALS}, got {self.temporal!r}")
        if self.temporal == "tcn-transformer" and self.embed_dim % self.heads:
            raise ValueError(f"head.embed_dim {self.embed_dim} is not divisible by head.heads "
                             f"{self.heads} (the tcn-transformer's attention)")
        if not self.au_scale > 0:
            raise ValueError(f"head.au_scale must be positive, got {self.au_scale!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"head.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HeadConfig:
        """The inverse of ``to_dict``; ValueError naming unknown or missing fields."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"head config has unknown fields {unknown}; known: {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as err:  # a required field is missing
            raise ValueError(f"head config {values} is incomplete: {err}") from err


class HeadOutput(NamedTuple):
    logits: torch.Tensor  # [B, C]
    au_sim: torch.Tensor  # [B, K], au_scale x cosine(v, a)
    visual: torch.Tensor  # [B, d], unit clip embedding v
    frame_au: torch.Tensor | None  # [B, T, K] per-frame AU activations, when asked for


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        fc1=nn.Linear(d_in, hidden), act=nn.ReLU(), fc2=nn.Linear(hidden, d_out)
    ))


class ConvTemporal(nn.Module):
    """h = GELU(Conv1d(d, d, 3, padding 1)) over time: [B, T, d] -> [B, T, d]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(frames.transpose(1, 2))).transpose(1, 2)


class TCNTransformerTemporal(nn.Module):
    """Two residual temporal-conv blocks (kernel 3, dilations 1 and 2, GELU), then one
    Transformer encoder layer (feed-forward 2d): [B, T, d] -> [B, T, d]."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Conv1d(dim, dim, kernel_size=3, padding=dilation, dilation=dilation)
            for dilation in (1, 2)
        )
        self.encoder = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, activation="gelu",
            batch_first=True,
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.transpose(1, 2)
        for conv in self.blocks:
            x = x + F.gelu(conv(x))
        return self.encoder(x.transpose(1, 2))


class CLIPAUHead(nn.Module):
    """The trainable CLIP-AU parts: AU text adapter, temporal module, classifier."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.au_adapter = _mlp(cfg.embed_dim, cfg.adapter_hidden, cfg.embed_dim)
        if cfg.temporal == "conv":
            self.temporal: nn.Module = ConvTemporal(cfg.embed_dim)
        else:
            self.temporal = TCNTransformerTemporal(cfg.embed_dim, cfg.heads, cfg.dropout)
        self.classifier = _mlp(cfg.n_aus, cfg.classifier_hidden, cfg.n_classes)

    def au_features(self, text_features: torch.Tensor) -> torch.Tensor:
        """Raw AU text features [K, d] -> unit AU features a [K, d]."""
        self._check(text_features, (self.cfg.n_aus, self.cfg.embed_dim), "AU text features")
        return F.normalize(self.au_adapter(text_features), dim=-1)

    def encode_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw frames [B, T, d] -> (unit clip embedding v [B, d], per-frame h [B, T, d])."""
        if frames.ndim != 3 or frames.shape[-1] != self.cfg.embed_dim:
            raise ValueError(f"frame features must be [B, T, {self.cfg.embed_dim}], got "
                             f"{tuple(frames.shape)}")
        hidden = self.temporal(frames)
        return F.normalize(hidden.mean(dim=1), dim=-1), hidden

    def similarity(self, visual: torch.Tensor, au: torch.Tensor) -> torch.Tensor:
        """au_scale x cosine between unit embeddings [..., d] and unit AU features [K, d]."""
        return self.cfg.au_scale * visual @ au.T

    def classify(self, au_sim: torch.Tensor) -> torch.Tensor:
        """AU similarities [..., K] -> class logits [..., C]."""
        return self.classifier(au_sim)

    def forward_au(self, frames: torch.Tensor, au: torch.Tensor,
                   frame_activations: bool = False) -> HeadOutput:
        """The forward from ready unit AU features ``au`` [K, d] (see ``au_features``)."""
        self._check(au, (self.cfg.n_aus, self.cfg.embed_dim), "AU features")
        visual, hidden = self.encode_frames(frames)
        au_sim = self.similarity(visual, au)
        frame_au = self.similarity(F.normalize(hidden, dim=-1), au) if frame_activations else None
        return HeadOutput(self.classify(au_sim), au_sim, visual, frame_au)

    def forward(self, frames: torch.Tensor, text_features: torch.Tensor,
                frame_activations: bool = False) -> HeadOutput:
        """Raw frames [B, T, d] and raw AU text features [K, d] -> ``HeadOutput``."""
        return self.forward_au(frames, self.au_features(text_features), frame_activations)

    def window_logits(self, frames: torch.Tensor, au: torch.Tensor, window: int) -> torch.Tensor:
        """Logits [B, T - L + 1, C] of every L-frame window of each clip, each window run
        through the temporal module on its own (as if it were the whole clip)."""
        batch, length, dim = frames.shape
        if not 1 <= window <= length:
            raise ValueError(f"window length must be in [1, {length}] (the clip length), got {window}")
        windows = frames.unfold(1, window, 1).permute(0, 1, 3, 2)  # [B, W, L, d]
        n_windows = windows.shape[1]
        visual, _ = self.encode_frames(windows.reshape(batch * n_windows, window, dim))
        logits = self.classify(self.similarity(visual, au))
        return logits.reshape(batch, n_windows, -1)

    @staticmethod
    def _check(tensor: torch.Tensor, shape: tuple[int, int], what: str) -> None:
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{what} must be {list(shape)}, got {list(tensor.shape)}")


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# Reference-code parameter prefixes -> this module's (conv temporal module only).
REFERENCE_NAMES: dict[str, str] = {
    "text_adapter.0.": "au_adapter.fc1.",
    "text_adapter.2.": "au_adapter.fc2.",
    "temporal.": "temporal.conv.",
    "temporal_classifier.0.": "classifier.fc1.",
    "temporal_classifier.2.": "classifier.fc2.",
}
# In reference checkpoints but unused by the reference forward: dropped on import.
REFERENCE_UNUSED = ("temporal_proj.",)


def from_reference_names(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a flat reference-code state dict (``text_adapter.0.weight``, ...) to this
    module's names. Returns (renamed tensors, dropped reference names); ValueError naming
    any key that is neither mapped nor known-unused."""
    renamed: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, tensor in state.items():
        if key.startswith(REFERENCE_UNUSED):
            dropped.append(key)
            continue
        prefix = next((p for p in REFERENCE_NAMES if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            renamed[REFERENCE_NAMES[prefix] + key[len(prefix):]] = tensor
    if unknown:
        raise ValueError(f"reference state dict has keys no CLIP-AU parameter maps to: {sorted(unknown)}; "
                         f"known prefixes: {sorted(REFERENCE_NAMES) + list(REFERENCE_UNUSED)}")
    return renamed, sorted(dropped)


def config_from_reference(state: dict[str, torch.Tensor]) -> HeadConfig:
    """The ``HeadConfig`` whose shapes a renamed reference state dict carries."""
    try:
        fc1, cls1, cls2 = (state[k] for k in ("au_adapter.fc1.weight", "classifier.fc1.weight",
                                                "classifier.fc2.weight"))
    except KeyError as err:
        raise ValueError(f"reference state dict lacks {err.args[0]!r} (renamed); has {sorted(state)}") from err
    return HeadConfig(embed_dim=int(fc1.shape[1]), n_aus=int(cls1.shape[1]), n_classes=int(cls2.shape[0]),
                      adapter_hidden=int(fc1.shape[0]), classifier_hidden=int(cls1.shape[0]))
