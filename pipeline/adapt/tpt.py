"""TPT-style prompt tuning per video on the frozen cache (method.md "Other baselines").

In: a ``TextTower``, the class prompts' ``PromptTokens`` (``context.template_tokens`` of
``a person with an expression of {class}.`` with n_ctx = 6), a ``TPTConfig`` and evaluation
clips [n, T, d] of raw frame embeddings (no labels). Out: ``TPTResult``: class logits [n, C]
of every clip (probabilities = their softmax) and the kept views.

Per video, from a fresh context (the prefix's 6 token embeddings, shared by the classes):
views = the clip's L-frame windows, each view's feature normalise(mean of its unit frames);
logits 100 cos(view, class features of the rebuilt text forward); the lowest-entropy 10 % of
views (at least one) are kept; one AdamW step minimising the entropy of their mean
probability; then the whole clip's feature normalise(mean of its unit frames) is classified
with the updated context. Videos never share state: several videos go through one text
forward, each with its own context (AdamW is elementwise, so the stacked context tensor
updates each video's slice from that video's gradient alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.adapt.autt import entropy, frozen, windows_of
from pipeline.adapt.context import ContextPrompts, PromptTokens
from pipeline.adapt.text_forward import TextTower, text_autocast

METHOD = "tpt"


@dataclass(frozen=True)
class TPTConfig:
    window: int = 16  # L: frames per view (each L-window of the clip is a view)
    keep: float = 0.1  # share of the lowest-entropy views kept (at least one)
    steps: int = 1  # AdamW steps per video
    lr: float = 5e-3  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay (torch's default, as TPT leaves it)
    logit_scale: float = 100.0  # logits = scale x cosine
    fast: bool = True  # text forward on the first E tokens only
    videos_per_batch: int = 64  # videos whose contexts share one text forward
    text_precision: str = "fp32"  # text-forward autocast on CUDA: fp32 | bf16 | fp16

    def __post_init__(self) -> None:
        if self.window < 1 or self.steps < 0 or self.videos_per_batch < 1:
            raise ValueError(f"tpt.window and tpt.videos_per_batch must be >= 1 and tpt.steps >= 0, got "
                             f"{self.window}, {self.videos_per_batch}, {self.steps}")
        if not 0 < self.keep <= 1 or not self.lr > 0:
            raise ValueError(f"tpt.keep must be in (0, 1] and tpt.lr > 0, got {self.keep}, {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TPTResult:
    logits: np.ndarray  # [n, C] of the whole clip, with each video's updated context
    probs: np.ndarray  # [n, C] softmax of the logits
    preds: np.ndarray  # [n]
    initial_logits: np.ndarray  # [n, C] the same before the update (zero-shot with the context's start)
    kept_views: np.ndarray  # [n, n_keep] window starts of the kept views (at the first step)


def unit_mean(frames: torch.Tensor) -> torch.Tensor:
    """[..., T, d] raw frames -> [..., d] normalise(mean over T of the unit frames)."""
    return F.normalize(F.normalize(frames, dim=-1).mean(dim=-2), dim=-1)


class TPT:
    """``TPT(tower, class_tokens, cfg)(clips)``: per-video prompt tuning."""

    def __init__(self, tower: TextTower, class_tokens: PromptTokens, cfg: TPTConfig = TPTConfig()) -> None:
        if class_tokens.layout != "template":
            raise ValueError("TPT needs template class prompts (context.template_tokens)")
        self.tower, self.cfg = tower, cfg
        self.prompts = ContextPrompts(tower, class_tokens, cfg.fast)

    def _class_features(self, ctx: torch.Tensor) -> torch.Tensor:
        with text_autocast(self.tower.device, self.cfg.text_precision):
            return F.normalize(self.prompts.features(ctx).float(), dim=-1)  # [V, C, d]

    def __call__(self, clips: np.ndarray) -> TPTResult:
        if np.ndim(clips) != 3 or np.shape(clips)[-1] != self.tower.embed_dim:
            raise ValueError(f"clips must be [n, T, {self.tower.embed_dim}], got {np.shape(clips)}")
        x = torch.as_tensor(np.asarray(clips, dtype=np.float32), device=self.tower.device)
        views = unit_mean(windows_of(x, self.cfg.window))  # [n, W, d]
        whole = unit_mean(x)  # [n, d]
        n_keep = max(1, int(self.cfg.keep * views.shape[1]))
        parts = []
        with frozen(self.tower):
            for start in range(0, len(x), self.cfg.videos_per_batch):
                end = start + self.cfg.videos_per_batch
                parts.append(self._videos(views[start:end], whole[start:end], n_keep))
        logits, initial, kept = (torch.cat(p).cpu().numpy() for p in zip(*parts))
        return TPTResult(logits=logits, probs=torch.softmax(torch.from_numpy(logits), -1).numpy(),
                         preds=logits.argmax(axis=1), initial_logits=initial, kept_views=kept)

    def _videos(self, views: torch.Tensor, whole: torch.Tensor, n_keep: int) -> tuple[torch.Tensor, ...]:
        scale, v = self.cfg.logit_scale, len(views)
        start = self.prompts.initial_context(shared=True)  # [1, n_ctx, w]
        ctx = start.expand(v, *start.shape).clone().requires_grad_(True)  # one context per video
        opt = torch.optim.AdamW([ctx], lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        kept = None
        with torch.no_grad():
            initial = scale * torch.einsum("vd,vcd->vc", whole, self._class_features(ctx))
        for _ in range(self.cfg.steps):
            logits = scale * torch.einsum("vwd,vcd->vwc", views, self._class_features(ctx))
            chosen = entropy(logits.detach()).argsort(dim=1, stable=True)[:, :n_keep]  # [V, n_keep]
            kept = chosen if kept is None else kept
            picked = logits.gather(1, chosen[..., None].expand(-1, -1, logits.shape[-1]))
            mean_p = torch.softmax(picked, dim=-1).mean(dim=1)  # [V, C]
            loss = -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum(dim=-1).sum()  # summed: own gradients
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            final = scale * torch.einsum("vd,vcd->vc", whole, self._class_features(ctx))
        if kept is None:
            kept = torch.zeros(v, 0, dtype=torch.long)
        return final, initial, kept
