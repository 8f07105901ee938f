"""Training CLIP-AU on cached features, and predicting with it (method.md "CLIP-AU").

In: per-sample sequences (arrays [n_i, d] of raw frame embeddings, in frame order), class
indices (negative = unlabelled, ignored), subject ids, the raw AU text features [K, d], the
number of classes and a ``TrainConfig``. Out: ``TrainResult``: the state dict of the epoch
with the best validation macro-F1 (ties to the earlier epoch), the per-epoch curve, the
validation metrics and the train / validation split. ``predict`` turns sequences into
evaluation-clip probabilities, classes, clip AU scores and per-frame AU activations.

Plain seeded functions: the seed fixes the split, the initialisation, every epoch's clip
offsets and batch order, so the same inputs give bit-identical weights on one machine.
They read nothing but their arguments and leave global RNGs and flags as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from pipeline.model.clips import ClipBank, clip_indices
from pipeline.model.head import TEMPORALS, CLIPAUHead, HeadConfig

VALIDATIONS = ("subjects", "videos")
Progress = Callable[[int, float, float], None]  # (epoch, train loss, validation macro-F1)


class TrainingDataError(ValueError):
    """The data cannot support training (too few subjects or classes, no samples...)."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # passes over all training clips (the papers: 20 for StressID)
    batch_size: int = 8  # clips per AdamW step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    seed: int = 1999  # split, initialisation, clip offsets and batch order
    clip_len: int = 20  # T: frames per clip
    stride: int = 2  # s: clips are taken from seq[::s] (1 for StressID)
    validation: Literal["subjects", "videos"] = "subjects"  # hold out source subjects or videos
    val_fraction: float = 0.2  # share of subjects (or of each subject's videos) held out
    temporal: Literal["conv", "tcn-transformer"] = "conv"  # the head's temporal module
    adapter_hidden: int = 512  # AU text adapter hidden width
    classifier_hidden: int = 256  # classifier hidden width
    device: str = "cpu"  # torch device of the head (the head is small: the CPU is fine)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "clip_len", "stride", "adapter_hidden", "classifier_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"train.lr must be > 0 and train.weight_decay >= 0, got {self.lr}, "
                             f"{self.weight_decay}")
        if self.validation not in VALIDATIONS:
            raise ValueError(f"train.validation must be one of {VALIDATIONS}, got {self.validation!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"train.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.temporal not in TEMPORALS:
            raise ValueError(f"train.temporal must be one of {TEMPORALS}, got {self.temporal!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]  # weights of the kept epoch, on the CPU
    head_config: HeadConfig  # rebuilds the module
    curve: list[dict[str, float]]  # per epoch: epoch, train_loss, val_f1, val_acc
    metrics: dict[str, Any]  # val_f1, val_acc, best_epoch, n_train, n_val, validation, val_subjects
    train_rows: np.ndarray = field(repr=False)  # indices into the inputs
    val_rows: np.ndarray = field(repr=False)


@dataclass
class Prediction:
    probs: np.ndarray  # [n, C] softmax of the logits
    pred: np.ndarray  # [n] class index
    logits: np.ndarray  # [n, C]
    au_sim: np.ndarray  # [n, K] clip AU scores, 5 x cosine
    frame_au: np.ndarray  # [n, T, K] per-frame AU activations
    frame_index: np.ndarray  # [n, T] position in each sequence of every clip frame


def _check_data(sequences: Sequence[np.ndarray], labels: np.ndarray, subjects: np.ndarray,
                au_text: np.ndarray, n_classes: int) -> np.ndarray:
    """The labelled rows; TrainingDataError naming why the data cannot be trained on."""
    if not (len(sequences) == len(labels) == len(subjects)):
        raise TrainingDataError(f"{len(sequences)} sequences, {len(labels)} labels and {len(subjects)} "
                                "subject ids: one of each per sample is needed")
    if not len(sequences):
        raise TrainingDataError("no samples to train on")
    bad = [i for i, s in enumerate(sequences) if np.ndim(s) != 2 or len(s) == 0]
    if bad:
        raise TrainingDataError(f"samples {bad[:10]} have no frames (or are not [n, d] arrays)")
    widths = {int(np.shape(s)[1]) for s in sequences}
    if len(widths) != 1 or au_text.ndim != 2 or au_text.shape[1] not in widths:
        raise TrainingDataError(f"frame embeddings have widths {sorted(widths)} and AU text features "
                                f"shape {list(au_text.shape)}: they must share one width d")
    over = np.flatnonzero(labels >= n_classes)
    if over.size:
        raise TrainingDataError(f"labels {sorted(set(labels[over].tolist()))} are outside the "
                                f"{n_classes} classes")
    rows = np.flatnonzero(labels >= 0)
    if not rows.size:
        raise TrainingDataError(f"none of the {len(labels)} samples is labelled")
    n_subjects = len(set(subjects[rows].tolist()))
    if n_subjects < 2:
        raise TrainingDataError(f"{n_subjects} labelled source subject(s): at least 2 are needed (one to "
                                "hold out for model selection)")
    classes = sorted(set(labels[rows].tolist()))
    if len(classes) < 2:
        raise TrainingDataError(f"every labelled sample has class {classes[0]}: at least 2 classes are needed")
    return rows


def split_rows(rows: np.ndarray, subjects: np.ndarray, cfg: TrainConfig,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of the labelled ``rows``, drawn with ``rng``."""
    names = sorted(set(subjects[rows].tolist()), key=str)
    if cfg.validation == "subjects":
        n_val = max(1, round(cfg.val_fraction * len(names)))
        held = {names[i] for i in rng.choice(len(names), n_val, replace=False)}
        is_val = np.array([subjects[r] in held for r in rows], dtype=bool)
    else:
        is_val = np.zeros(len(rows), dtype=bool)
        for name in names:
            mine = np.flatnonzero(subjects[rows] == name)
            if len(mine) >= 2:  # 20 % of the subject's samples, at least one, never all
                n_val = min(len(mine) - 1, max(1, round(cfg.val_fraction * len(mine))))
                is_val[rng.choice(mine, n_val, replace=False)] = True
    train, val = rows[~is_val], rows[is_val]
    if not len(val) or not len(train):
        raise TrainingDataError(f"validation by {cfg.validation} leaves {len(train)} training and {len(val)} "
                                "validation samples: both must be non-empty")
    return train, val


def make_optimizer(params, lr: float, weight_decay: float, fused: bool | None = None) -> torch.optim.Optimizer:
    """The head's AdamW (method.md: lr 1e-3, weight decay 1e-4). ``fused`` None: torch's fused
    kernel where the parameters' device has one (one pass over all parameters per step instead
    of about ten elementwise ops per tensor: about a third of a CPU step for d = 512); it
    agrees with the plain loop to float rounding, and is deterministic."""
    params = list(params)
    if fused is None:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except RuntimeError:  # no fused kernel for this device or dtype: the plain loop
            fused = False
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


@contextlib.contextmanager
def _isolated(device: torch.device, seed: int) -> Iterator[None]:
    """Seeded torch RNG and deterministic algorithms inside; the caller's state restored after."""
    devices = [] if device.type != "cuda" else [device.index or 0]
    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])


def _logits(head: CLIPAUHead, clips: torch.Tensor, text: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    au = head.au_features(text)
    return torch.cat([head.forward_au(clips[i:i + chunk], au).logits for i in range(0, len(clips), chunk)])


def train_head(sequences: Sequence[np.ndarray], labels: Sequence[int] | np.ndarray,
               subjects: Sequence[Any] | np.ndarray, au_text: np.ndarray, n_classes: int,
               cfg: TrainConfig = TrainConfig(), progress: Progress | None = None) -> TrainResult:
    """Train a fresh head; keep the epoch with the best validation macro-F1."""
    labels, subjects = np.asarray(labels, dtype=np.int64), np.asarray(subjects, dtype=object)
    au_text = np.asarray(au_text, dtype=np.float32)
    rows = _check_data(sequences, labels, subjects, au_text, n_classes)
    rng = np.random.default_rng(cfg.seed)
    train_rows, val_rows = split_rows(rows, subjects, cfg, rng)
    head_cfg = HeadConfig(embed_dim=au_text.shape[1], n_aus=au_text.shape[0], n_classes=n_classes,
                          temporal=cfg.temporal, adapter_hidden=cfg.adapter_hidden,
                          classifier_hidden=cfg.classifier_hidden)
    device = torch.device(cfg.device)
    bank = ClipBank(list(sequences), dtype=np.float32)
    text = torch.tensor(au_text, dtype=torch.float32, device=device)  # a copy: au_text may be read-only
    val_clips = torch.from_numpy(bank.clips(val_rows, cfg.clip_len, cfg.stride)).to(device)
    val_y = labels[val_rows]
    curve: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor], float] | None = None
    with _isolated(device, cfg.seed):
        head = CLIPAUHead(head_cfg).to(device)
        opt = make_optimizer(head.parameters(), cfg.lr, cfg.weight_decay)
        for epoch in range(1, cfg.epochs + 1):
            head.train()
            order = rng.permutation(train_rows)
            clips = torch.from_numpy(bank.clips(order, cfg.clip_len, cfg.stride, rng)).to(device)
            targets = torch.from_numpy(labels[order]).to(device)
            total = 0.0
            for start in range(0, len(order), cfg.batch_size):
                x, y = clips[start:start + cfg.batch_size], targets[start:start + cfg.batch_size]
                loss = F.cross_entropy(head(x, text).logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(y)
            head.eval()
            with torch.no_grad():
                pred = _logits(head, val_clips, text).argmax(dim=1).cpu().numpy()
            f1 = float(f1_score(val_y, pred, average="macro", zero_division=0))
            acc = float(np.mean(pred == val_y))
            curve.append({"epoch": epoch, "train_loss": total / len(order), "val_f1": f1, "val_acc": acc})
            if best is None or f1 > best[0]:  # ties keep the earlier epoch
                best = (f1, epoch, {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}, acc)
            if progress is not None:
                progress(epoch, total / len(order), f1)
    f1, epoch, state, acc = best
    metrics = {"val_f1": f1, "val_acc": acc, "best_epoch": epoch, "n_train": len(train_rows),
               "n_val": len(val_rows), "validation": cfg.validation,
               "val_subjects": sorted({str(s) for s in subjects[val_rows]})}
    return TrainResult(state, head_cfg, curve, metrics, train_rows, val_rows)


@torch.no_grad()
def predict(head: CLIPAUHead, sequences: Sequence[np.ndarray], au_text: np.ndarray, clip_len: int,
            stride: int, batch_size: int = 256) -> Prediction:
    """Evaluation clips of ``sequences`` through ``head`` (in eval mode, on its device)."""
    device = next(head.parameters()).device
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    frame_index = clip_indices(lengths, clip_len, stride)
    bank = ClipBank(sequences, dtype=np.float32)
    clips = bank.frames[bank.offsets[:, None] + frame_index]
    was_training = head.training
    head.eval()
    try:
        au = head.au_features(torch.tensor(np.asarray(au_text), dtype=torch.float32, device=device))
        outs = [head.forward_au(torch.from_numpy(clips[i:i + batch_size]).to(device), au, True)
                for i in range(0, len(clips), batch_size)]
    finally:
        head.train(was_training)
    logits = torch.cat([o.logits for o in outs]).float()
    return Prediction(
        probs=torch.softmax(logits, dim=1).cpu().numpy(), pred=logits.argmax(dim=1).cpu().numpy(),
        logits=logits.cpu().numpy(), au_sim=torch.cat([o.au_sim for o in outs]).cpu().numpy(),
        frame_au=torch.cat([o.frame_au for o in outs]).cpu().numpy(), frame_index=frame_index,
    )
