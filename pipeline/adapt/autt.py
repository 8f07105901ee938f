"""CLIP-AUTT: test-time personalisation of the AU prompt context, one target subject at a time.

In: a frozen ``CLIPAUHead``, the frozen open_clip text tower (``TextTower``), the AU prompts'
``PromptTokens``, an ``AdaptConfig``, and per subject a ``SubjectInputs``: its evaluation
clips [n, T, d] of raw frame embeddings (the reference option: its strided sequences). No
labels: ``SubjectInputs`` has no field that could hold them. Out: per subject an
``AdaptResult``: the trajectory (probabilities, predictions, selected windows, entropies,
AU scores at every step, step 0 included), the final predictions, the adapted context and
timings.

Method (method.md "CLIP-AUTT"): only the context [K, n_ctx, w] adapts, starting from the
template prefix's token embeddings; a = the head's adapter on the text features of the
rebuilt forward. At every forward, each clip's L-frame window whose own prediction has the
lowest entropy is selected (no gradient); the objective is the mean entropy of the selected
windows' predictions; one AdamW over ``steps`` updates; the final predictions come from a
fresh forward after the last update (trajectory row ``steps``). ``steps = 0`` is "CLIP-AU +
window selection". The reference option (method.md "Reference option") changes what the
section lists; its final predictions are the forward before the last update.

Subjects never share state: a fresh context, optimiser and random stream per subject. With
``subjects_per_batch > 1`` several subjects' contexts go through one text forward; the
gradient each context gets is its own subject's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.adapt.config import AdaptConfig
from pipeline.adapt.context import ContextPrompts, PromptTokens
from pipeline.adapt.text_forward import TextTower, text_autocast
from pipeline.model.head import CLIPAUHead


@dataclass(frozen=True, slots=True)
class SubjectInputs:
    """One target subject's unlabelled inputs (there is deliberately no label field)."""

    clips: np.ndarray | None  # [n, T, d] evaluation clips, raw frame embeddings (default method)
    strided: tuple[np.ndarray, ...] | None = None  # per sample seq[::s], [len_i, d] (reference option)


@dataclass
class AdaptResult:
    probs: np.ndarray  # [steps + 1, n, C] class probabilities of the forward at each step
    preds: np.ndarray  # [steps + 1, n] argmax classes
    windows: np.ndarray  # [steps + 1, n] start of the selected window in the clip (segment)
    entropies: np.ndarray  # [steps + 1, n] entropy (nats) of each selected window's prediction
    losses: np.ndarray  # [steps + 1] the objective: mean of ``entropies`` over the clips
    au_scores: np.ndarray  # [steps + 1, n, K] 5 x cosine of the selected window and each AU
    segment_starts: np.ndarray | None  # [steps + 1, n] reference option: segment start in strided
    final_step: int  # the trajectory row of the final predictions
    context: np.ndarray  # the adapted context, float32 [K (1: shared), n_ctx, w]
    seconds: dict[str, float]  # wall time: setup, steps, total (of the forward group), per_step

    @property
    def final_probs(self) -> np.ndarray:
        return self.probs[self.final_step]

    @property
    def final_preds(self) -> np.ndarray:
        return self.preds[self.final_step]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last axis."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def windows_of(clips: torch.Tensor, window: int) -> torch.Tensor:
    """[n, T, d] -> [n, T - L + 1, L, d], every L consecutive frames."""
    if not 1 <= window <= clips.shape[1]:
        raise ValueError(f"window length {window} must be in [1, {clips.shape[1]}] (the clip length T)")
    return clips.unfold(1, window, 1).permute(0, 1, 3, 2)


@torch.no_grad()
def window_entropies(head: CLIPAUHead, clips: torch.Tensor, au: torch.Tensor, window: int,
                     scale: float) -> torch.Tensor:
    """[n, W] entropy of each L-window's prediction, the window run through the head alone,
    its AU similarities ``scale`` x cosine (the head's own scale: ``head.window_logits``)."""
    wins = windows_of(clips, window)
    n, w = wins.shape[:2]
    visual, _ = head.encode_frames(wins.reshape(n * w, window, clips.shape[-1]))
    return entropy(head.classify(scale * visual @ au.T)).reshape(n, w)


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for ``modules`` inside; their flags restored after."""
    params = [p for m in modules for p in m.parameters()]
    flags, modes = [p.requires_grad for p in params], [m.training for m in modules]
    try:
        for p in params:
            p.requires_grad_(False)
        for m in modules:
            m.eval()
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for m, mode in zip(modules, modes):
            m.train(mode)


class _Subject:
    """One subject's state during adaptation: context, optimiser, random stream, records."""

    def __init__(self, inputs: SubjectInputs, ctx: torch.Tensor, cfg: AdaptConfig, device: torch.device):
        self.inputs, self.cfg, self.device = inputs, cfg, device
        self.ctx = ctx.detach().clone().requires_grad_(True)
        self.opt = self._optimiser()
        self.rng = np.random.default_rng(cfg.seed)
        self.records: list[dict[str, np.ndarray]] = []
        if cfg.reference:
            self.seqs = [torch.as_tensor(np.asarray(s, dtype=np.float32)) for s in inputs.strided]
        else:
            self.eval_clips = torch.as_tensor(np.asarray(inputs.clips, dtype=np.float32), device=device)

    def _optimiser(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([self.ctx], lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def clips(self) -> tuple[torch.Tensor, np.ndarray | None]:
        """This step's clips [n, T, d] (and segment starts for the reference option)."""
        if not self.cfg.reference:
            return self.eval_clips, None
        starts = np.array([self.rng.integers(0, len(s)) for s in self.seqs], dtype=np.int64)
        steps = np.arange(self.cfg.clip_len)
        segs = [s[(start + steps) % len(s)] for s, start in zip(self.seqs, starts)]  # wraps around
        return torch.stack(segs).to(self.device), starts


class CLIPAUTT:
    """CLIP-AUTT over frozen parts: ``adapter(subject)`` or ``adapter.run(subjects)``."""

    def __init__(self, head: CLIPAUHead, tower: TextTower, tokens: PromptTokens, cfg: AdaptConfig) -> None:
        want = "reference" if cfg.reference else "template"
        if tokens.layout != want:
            raise ValueError(f"adapt.reference={cfg.reference} needs {want} prompt tokens, got {tokens.layout} "
                             "ones (context.template_tokens / context.reference_tokens)")
        if tokens.n_prompts != head.cfg.n_aus or tower.embed_dim != head.cfg.embed_dim:
            raise ValueError(f"the head expects {head.cfg.n_aus} AUs of width {head.cfg.embed_dim}; the "
                             f"prompts are {tokens.n_prompts} and the text tower gives width {tower.embed_dim}")
        if cfg.reference and tokens.n_ctx != cfg.n_ctx:
            raise ValueError(f"reference prompt tokens have n_ctx {tokens.n_ctx}, adapt.n_ctx is {cfg.n_ctx}")
        self.head, self.tower, self.cfg = head, tower, cfg
        self.prompts = ContextPrompts(tower, tokens, cfg.fast)
        self.device = next(head.parameters()).device

    def __call__(self, subject: SubjectInputs) -> AdaptResult:
        return self.run([subject])[0]

    def run(self, subjects: Sequence[SubjectInputs], context: np.ndarray | None = None) -> list[AdaptResult]:
        """Each subject adapted on its own; ``subjects_per_batch`` of them share forwards.
        ``context``: start from this (an adapted context) instead of the initial one; with
        ``steps = 0`` this applies an adapted context to new clips of its subject."""
        for i, subject in enumerate(subjects):
            self._check(subject, i)
        start_ctx = None
        if context is not None:
            start_ctx = torch.as_tensor(np.asarray(context, dtype=np.float32))
            want = tuple(self.prompts.initial_context().shape)
            if tuple(start_ctx.shape) != want:
                raise ValueError(f"context of shape {list(start_ctx.shape)} does not fit these prompts, "
                                 f"which need {list(want)}")
        size = self.cfg.subjects_per_batch
        out: list[AdaptResult] = []
        for start in range(0, len(subjects), size):
            out += self._group(subjects[start:start + size], start_ctx)
        return out

    def _check(self, subject: SubjectInputs, i: int) -> None:
        d = self.head.cfg.embed_dim
        if not isinstance(subject, SubjectInputs):
            raise TypeError(f"subject {i} must be SubjectInputs, got {type(subject).__name__}")
        if self.cfg.reference:
            seqs = subject.strided
            if not seqs or any(np.ndim(s) != 2 or len(s) == 0 or np.shape(s)[1] != d for s in seqs):
                raise ValueError(f"subject {i}: the reference option needs strided sequences, each "
                                 f"[len >= 1, {d}]")
        elif subject.clips is None or np.ndim(subject.clips) != 3 or np.shape(subject.clips)[-1] != d \
                or not len(subject.clips):
            raise ValueError(f"subject {i}: clips must be [n >= 1, T, {d}], got "
                             f"{None if subject.clips is None else np.shape(subject.clips)}")
        else:
            windows_of(torch.zeros(1, np.shape(subject.clips)[1], 1), self.cfg.window)  # L <= T

    def _group(self, inputs: Sequence[SubjectInputs], start: torch.Tensor | None = None) -> list[AdaptResult]:
        cfg, t0 = self.cfg, time.perf_counter()
        generator = torch.Generator().manual_seed(cfg.seed)
        init = self.prompts.initial_context(generator=generator)  # the same start for every subject
        if start is not None:
            init = start.to(device=init.device, dtype=init.dtype)
        with frozen(self.head, self.tower):
            subjects = [_Subject(x, init, cfg, self.device) for x in inputs]
            t1, step_times = time.perf_counter(), []
            for step in range(cfg.steps + 1):
                ts, update = time.perf_counter(), step < cfg.steps
                if cfg.reference and update:  # the public code re-creates AdamW before every step
                    for s in subjects:
                        s.opt = s._optimiser()
                self._step(subjects, update)
                step_times.append(time.perf_counter() - ts)
        t2 = time.perf_counter()
        seconds = {"setup": t1 - t0, "steps": t2 - t1, "total": t2 - t0, "per_step": float(np.mean(step_times)),
                   "subjects_in_forward": float(len(subjects))}
        final = max(cfg.steps - 1, 0) if cfg.reference else cfg.steps
        return [self._result(s, final, seconds) for s in subjects]

    def _step(self, subjects: list[_Subject], update: bool) -> None:
        """One forward of every subject (records kept), then, if ``update``, one AdamW step each."""
        with torch.set_grad_enabled(update), text_autocast(self.tower.device, self.cfg.text_precision):
            text = self.prompts.features(torch.stack([s.ctx for s in subjects])).float()
        if self.cfg.reference:  # the public code feeds the adapter unit text features at test time
            text = F.normalize(text, dim=-1)
        outs, grads = [], []
        for s, t in zip(subjects, text.to(self.device)):
            with torch.set_grad_enabled(update):
                au = self.head.au_features(t)
            leaf = au.detach().requires_grad_(update)
            s.records.append(self._objective(s, leaf, update))
            outs.append(au)
            grads.append(leaf.grad)
        if update:
            torch.autograd.backward(outs, grads)  # one backward through the text tower
            for s in subjects:
                s.opt.step()
                s.opt.zero_grad(set_to_none=True)

    def _objective(self, s: _Subject, au: torch.Tensor, update: bool) -> dict[str, np.ndarray]:
        """Select windows, then the mean entropy of their predictions; its gradient w.r.t. ``au``
        accumulates chunk by chunk in ``au.grad``."""
        clips, seg_starts = s.clips()
        cfg, n = self.cfg, len(clips)
        scale = 1.0 if cfg.reference else self.head.cfg.au_scale  # the reference scores unscaled cosines
        chunk = cfg.chunk_size or n
        rec: dict[str, list[torch.Tensor]] = {"probs": [], "windows": [], "entropies": [], "au_scores": []}
        for i in range(0, n, chunk):
            part = clips[i:i + chunk]
            starts = window_entropies(self.head, part, au.detach(), cfg.window, scale).argmin(dim=1)
            chosen = windows_of(part, cfg.window)[torch.arange(len(part), device=part.device), starts]
            with torch.set_grad_enabled(update):
                out = self.head.forward_au(chosen, au)
                ent = entropy(out.logits)
                if update:
                    (ent.sum() / n).backward()
            rec["probs"].append(torch.softmax(out.logits.detach(), dim=-1))
            rec["windows"].append(starts)
            rec["entropies"].append(ent.detach())
            rec["au_scores"].append(out.au_sim.detach())
        got = {k: torch.cat(v).cpu().numpy() for k, v in rec.items()}
        got["segment_starts"] = seg_starts
        return got

    def _result(self, s: _Subject, final: int, seconds: dict[str, float]) -> AdaptResult:
        stack = {k: np.stack([r[k] for r in s.records]) for k in ("probs", "windows", "entropies", "au_scores")}
        return AdaptResult(
            probs=stack["probs"].astype(np.float32), preds=stack["probs"].argmax(axis=-1),
            windows=stack["windows"], entropies=stack["entropies"], losses=stack["entropies"].mean(axis=1),
            au_scores=stack["au_scores"].astype(np.float32),
            segment_starts=np.stack([r["segment_starts"] for r in s.records]) if self.cfg.reference else None,
            final_step=final, context=s.ctx.detach().float().cpu().numpy(), seconds=dict(seconds),
        )
