"""TTA-CaP, frozen-cache variant: gradient-free caches per video (method.md "TTA-CaP").

In: the raw class-prompt text features [C, d]; for the source side, the source subjects'
evaluation clips [N, T, d] with their subject ids and class indices (source labels are
allowed: they only shape the prototypes); for a target subject, its evaluation clips
[n, T, d] and nothing else (no labels). Out: per target clip the video logits [C] (the mean
of its frame logits; probabilities = their softmax), the per-frame logits and how many
frames entered each cache, and the source subjects that lent their prototypes.

- Source prototypes, per source subject and class: medoids of DBSCAN clusters of the unit
  frame embeddings (cosine distance, min_samples 5, eps = the 0.7 quantile of each point's
  cosine distance to its 5th nearest neighbour, the point itself not counted); no cluster:
  the frame nearest the class mean. Subject statistics: mean and diagonal variance of the
  unit frames, the variance shrunk toward its mean by 0.05.
- A target subject borrows the prototypes of the 3 source subjects nearest by the diagonal
  Frechet distance between statistics.
- Per video, frame by frame, caches empty at the start: the frame's logits are
  100 cos(normalise(e + proto + pos - neg), class features), each term the affinity-weighted
  mean (affinity exp(-10 (1 - cos))) of the top-5 entries of its store. Then the frame may
  enter a cache: its prediction must equal the majority (more than half) of the last 3
  predictions, itself included, and the prototypes' top class (class score = the best cosine
  of that class's prototypes) with a margin over the next > 0.05; entropy < 0.5 nats ->
  positive cache of the predicted class (5 per class), 0.5 <= entropy < 0.8 -> negative
  cache keyed by the least likely class (4 per class). A full class slot keeps its lowest-
  entropy entries. These gates apply to both caches (the entropy only routes).
Computed in float64 numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.cluster import DBSCAN
from sklearn.neighbors import NearestNeighbors

from pipeline.model.baselines import softmax, unit

METHOD = "tta-cap-frozen"


@dataclass(frozen=True)
class TTACaPConfig:
    logit_scale: float = 100.0  # logits = scale x cosine with the class prompt features
    pos_per_class: int = 5  # positive cache slots per class
    neg_per_class: int = 4  # negative cache slots per (least likely) class
    history: int = 3  # temporal gate: majority of the last `history` predictions
    pos_entropy: float = 0.5  # entropy (nats) below which a frame may enter the positive cache
    neg_entropy: float = 0.8  # [pos_entropy, neg_entropy): the negative cache's band
    proto_margin: float = 0.05  # prototype gate: top class score - next > margin
    top_k: int = 5  # entries retrieved from each store
    sharpness: float = 10.0  # affinity exp(-sharpness (1 - cos))
    neighbours: int = 3  # source subjects whose prototypes a target borrows
    min_samples: int = 5  # DBSCAN min_samples; eps from the distance to this nearest neighbour
    eps_quantile: float = 0.7  # eps = this quantile of those distances
    shrinkage: float = 0.05  # diagonal variance shrunk toward its mean by this much

    def __post_init__(self) -> None:
        for name in ("pos_per_class", "neg_per_class", "history", "top_k", "neighbours", "min_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"tta_cap.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.pos_entropy <= self.neg_entropy:
            raise ValueError(f"tta_cap needs 0 <= pos_entropy <= neg_entropy, got {self.pos_entropy}, "
                             f"{self.neg_entropy}")
        if not 0 < self.eps_quantile <= 1 or not 0 <= self.shrinkage <= 1:
            raise ValueError(f"tta_cap.eps_quantile must be in (0, 1] and shrinkage in [0, 1], got "
                             f"{self.eps_quantile}, {self.shrinkage}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SourceSubject:
    prototypes: np.ndarray  # [P, d] unit frame embeddings (medoids)
    classes: np.ndarray  # [P] class index of each prototype
    mean: np.ndarray  # [d] mean of the subject's unit frames
    var: np.ndarray  # [d] shrunk diagonal variance


@dataclass
class TTACaPResult:
    logits: np.ndarray  # [n, C] video logits: mean of the frame logits
    probs: np.ndarray  # [n, C] softmax of the logits
    preds: np.ndarray  # [n] argmax
    frame_logits: np.ndarray  # [n, T, C]
    cached: np.ndarray  # [n, 2] frames that entered the positive / negative cache per video
    neighbours: list[str] = field(default_factory=list)  # source subjects that lent prototypes


def frame_units(clips: np.ndarray) -> np.ndarray:
    """[n, T, d] raw clips -> [n * T, d] unit frames."""
    if np.ndim(clips) != 3:
        raise ValueError(f"clips must be [n, T, d], got shape {np.shape(clips)}")
    return unit(np.asarray(clips).reshape(-1, np.shape(clips)[-1]))


def subject_stats(frames: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and shrunk diagonal variance of unit frames [m, d]."""
    var = frames.var(axis=0)
    return frames.mean(axis=0), (1 - shrinkage) * var + shrinkage * var.mean()


def frechet_diag(mu1: np.ndarray, var1: np.ndarray, mu2: np.ndarray, var2: np.ndarray) -> float:
    """Frechet distance between diagonal Gaussians (squared form, as FID)."""
    return float(((mu1 - mu2) ** 2).sum() + (var1 + var2 - 2 * np.sqrt(var1 * var2)).sum())


def class_prototypes(frames: np.ndarray, cfg: TTACaPConfig) -> np.ndarray:
    """Unit frames [m, d] of one subject and class -> prototypes [P, d] (DBSCAN medoids)."""
    k = cfg.min_samples
    if len(frames) > k:
        dist, _ = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(frames).kneighbors(frames)
        eps = float(np.quantile(dist[:, k], cfg.eps_quantile))  # column 0 is the point itself
        if eps > 0:
            labels = DBSCAN(eps=eps, min_samples=k, metric="cosine").fit(frames).labels_
            medoids = []
            for cluster in sorted(set(labels.tolist()) - {-1}):
                members = frames[labels == cluster]
                medoids.append(members[np.argmin((1 - members @ members.T).sum(axis=1))])
            if medoids:
                return np.stack(medoids)
    return frames[np.argmax(frames @ unit(frames.mean(axis=0)))][None]  # fallback: nearest the class mean


def source_bank(clips: np.ndarray, subjects: Sequence[Any], labels: Sequence[int] | np.ndarray,
                cfg: TTACaPConfig = TTACaPConfig()) -> dict[str, SourceSubject]:
    """Prototypes and statistics of every source subject, from its labelled evaluation clips."""
    subjects, labels = np.asarray([str(s) for s in subjects]), np.asarray(labels)
    if not (len(clips) == len(subjects) == len(labels)) or not len(clips):
        raise ValueError(f"{len(clips)} source clips, {len(subjects)} subject ids and {len(labels)} labels: "
                         "one of each per clip, at least one clip")
    t = np.shape(clips)[1]
    bank = {}
    for name in sorted(set(subjects.tolist())):
        rows = np.flatnonzero((subjects == name) & (labels >= 0))
        if not len(rows):
            continue
        frames = frame_units(np.asarray(clips)[rows])
        frame_class = np.repeat(labels[rows], t)
        protos, classes = [], []
        for c in sorted(set(frame_class.tolist())):
            found = class_prototypes(frames[frame_class == c], cfg)
            protos.append(found)
            classes += [c] * len(found)
        mean, var = subject_stats(frames, cfg.shrinkage)
        bank[name] = SourceSubject(np.concatenate(protos), np.array(classes, dtype=np.int64), mean, var)
    if not bank:
        raise ValueError("no labelled source clip: TTA-CaP needs source prototypes")
    return bank


def nearest_sources(frames: np.ndarray, bank: dict[str, SourceSubject], cfg: TTACaPConfig) -> list[str]:
    """The ``cfg.neighbours`` source subjects nearest a target's unit frames (ties: by name)."""
    mu, var = subject_stats(frames, cfg.shrinkage)
    dist = {name: frechet_diag(mu, var, s.mean, s.var) for name, s in bank.items()}
    return sorted(dist, key=lambda name: (dist[name], name))[:cfg.neighbours]


def _retrieve(query: np.ndarray, store: np.ndarray, cfg: TTACaPConfig) -> np.ndarray:
    """Affinity-weighted mean of the top-k entries of ``store`` [m, d] (zeros when empty)."""
    if not len(store):
        return np.zeros_like(query)
    aff = np.exp(-cfg.sharpness * (1 - store @ query))
    top = np.argsort(-aff, kind="stable")[:cfg.top_k]
    return (aff[top, None] * store[top]).sum(axis=0) / aff[top].sum()


def _admit(cache: list[list[tuple[float, np.ndarray]]], key: int, ent: float, feat: np.ndarray,
           size: int) -> None:
    slot = cache[key]
    if len(slot) < size:
        slot.append((ent, feat))
    else:
        worst = max(range(len(slot)), key=lambda i: slot[i][0])
        if ent < slot[worst][0]:
            slot[worst] = (ent, feat)


def run_video(frames: np.ndarray, class_text: np.ndarray, protos: np.ndarray, proto_classes: np.ndarray,
              cfg: TTACaPConfig = TTACaPConfig()) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """One video's unit frames [T, d] with fresh caches -> (video logits [C], frame logits
    [T, C], (frames into the positive cache, frames into the negative cache))."""
    text = unit(class_text)
    n_classes = len(text)
    pos: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(n_classes)]
    neg: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(n_classes)]
    history: list[int] = []
    out, counts = np.zeros((len(frames), n_classes)), [0, 0]
    for t, e in enumerate(frames):
        pos_store, neg_store = (np.array([f for slot in cache for _, f in slot]).reshape(-1, len(e))
                                for cache in (pos, neg))
        fused = unit(e + _retrieve(e, protos, cfg) + _retrieve(e, pos_store, cfg)
                     - _retrieve(e, neg_store, cfg))
        logits = cfg.logit_scale * text @ fused
        out[t] = logits
        p = softmax(logits)
        ent, pred = float(-(p * np.log(np.maximum(p, 1e-300))).sum()), int(np.argmax(logits))
        history = (history + [pred])[-cfg.history:]
        if not history.count(pred) * 2 > len(history) or not _protos_agree(e, pred, protos, proto_classes,
                                                                           n_classes, cfg):
            continue
        if ent < cfg.pos_entropy:
            _admit(pos, pred, ent, e, cfg.pos_per_class)
            counts[0] += 1
        elif ent < cfg.neg_entropy:
            _admit(neg, int(np.argmin(logits)), ent, e, cfg.neg_per_class)
            counts[1] += 1
    return out.mean(axis=0), out, (counts[0], counts[1])


def _protos_agree(e: np.ndarray, pred: int, protos: np.ndarray, proto_classes: np.ndarray, n_classes: int,
                  cfg: TTACaPConfig) -> bool:
    cos = protos @ e
    score = np.array([cos[proto_classes == c].max() if np.any(proto_classes == c) else -np.inf
                      for c in range(n_classes)])
    order = np.argsort(-score, kind="stable")
    return int(order[0]) == pred and score[order[0]] - score[order[1]] > cfg.proto_margin


def tta_cap_subject(clips: np.ndarray, class_text: np.ndarray, bank: dict[str, SourceSubject],
                    cfg: TTACaPConfig = TTACaPConfig()) -> TTACaPResult:
    """A target subject's evaluation clips [n, T, d] (no labels) -> ``TTACaPResult``."""
    frames = frame_units(clips)
    if np.shape(class_text)[-1] != frames.shape[-1] or len(class_text) < 2:
        raise ValueError(f"class text features {np.shape(class_text)} must be [C >= 2, {frames.shape[-1]}]")
    neighbours = nearest_sources(frames, bank, cfg)
    protos = np.concatenate([bank[name].prototypes for name in neighbours])
    proto_classes = np.concatenate([bank[name].classes for name in neighbours])
    per_video = frames.reshape(len(clips), -1, frames.shape[-1])
    runs = [run_video(video, class_text, protos, proto_classes, cfg) for video in per_video]
    logits = np.stack([r[0] for r in runs])
    return TTACaPResult(logits=logits, probs=softmax(logits), preds=logits.argmax(axis=1),
                        frame_logits=np.stack([r[1] for r in runs]), cached=np.array([r[2] for r in runs]),
                        neighbours=neighbours)
