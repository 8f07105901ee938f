"""Baselines on the frozen cache (method.md "Other baselines on the same cache").

In: evaluation clips [n, T, d] of raw frame embeddings (``clips.clip_indices``, the same
clips every method sees) and raw text features (class prompts, their "no {class}"
negatives, the AU bank). Out: class logits [n, C] (probabilities = their softmax) of
- zero-shot CLIP: 100 cos(f, class feature), f = normalise(mean of the clip's unit frames);
- positive-negative prompts (FineCLIPER): 100 (cos(f, class) - cos(f, "no class"));
- the AU linear probe: logistic regression on the K cosines between f and the unit raw AU
  text features, fitted on source clips only (the caller passes only those to ``fit``).
Pure functions over numpy arrays, computed in float64.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

EPS = 1e-12


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def clip_features(clips: np.ndarray) -> np.ndarray:
    """[n, T, d] raw frame embeddings -> [n, d] normalise(mean over t of unit frames)."""
    if np.ndim(clips) != 3:
        raise ValueError(f"clips must be [n, T, d], got shape {np.shape(clips)}")
    return unit(unit(clips).mean(axis=1))


def cosines(features: np.ndarray, text: np.ndarray) -> np.ndarray:
    """[n, m] cosine of every clip feature [n, d] with every raw text feature [m, d]."""
    if np.shape(features)[-1] != np.shape(text)[-1]:
        raise ValueError(f"clip features of width {np.shape(features)[-1]} and text features of width "
                         f"{np.shape(text)[-1]} cannot be compared")
    return unit(features) @ unit(text).T


def zero_shot_logits(features: np.ndarray, class_text: np.ndarray) -> np.ndarray:
    """Zero-shot CLIP: 100 x cosine with each class prompt's feature, [n, C]."""
    return 100.0 * cosines(features, class_text)


def pos_neg_logits(features: np.ndarray, class_text: np.ndarray, neg_class_text: np.ndarray) -> np.ndarray:
    """Positive-negative prompts: 100 x (cos with "of {class}" - cos with "of no {class}")."""
    if np.shape(class_text) != np.shape(neg_class_text):
        raise ValueError(f"positive prompts {np.shape(class_text)} and negative prompts "
                         f"{np.shape(neg_class_text)} must pair up one to one")
    return 100.0 * (cosines(features, class_text) - cosines(features, neg_class_text))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def fit_au_probe(au_cos: np.ndarray, labels: np.ndarray, c: float = 1.0, max_iter: int = 1000) -> Pipeline:
    """Logistic regression on source clips' AU cosines [n, K] (labels: class indices).

    The cosines are standardised first (statistics of these source clips): AU cosines span
    a narrow range, so the L2 strength ``c`` means the same whatever the backbone.
    """
    labels = np.asarray(labels)
    if len(au_cos) != len(labels) or not len(labels):
        raise ValueError(f"{len(au_cos)} feature rows and {len(labels)} labels: need one label per "
                         "row and at least one row")
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"the AU probe needs source clips of at least 2 classes, got only {present.tolist()}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    return probe.fit(np.asarray(au_cos, dtype=np.float64), labels)


def au_probe_proba(probe: Pipeline, au_cos: np.ndarray, n_classes: int) -> np.ndarray:
    """[n, C] probabilities in the declared class order; a class the probe never saw in
    training gets probability 0."""
    seen = probe.classes_
    if seen.min() < 0 or seen.max() >= n_classes:
        raise ValueError(f"the probe was fitted on classes {seen.tolist()}, outside 0..{n_classes - 1}")
    out = np.zeros((len(au_cos), n_classes), dtype=np.float64)
    out[:, seen] = probe.predict_proba(np.asarray(au_cos, dtype=np.float64))
    return out


def au_probe_logits(probe: Pipeline, au_cos: np.ndarray, n_classes: int) -> np.ndarray:
    """log of ``au_probe_proba`` (-inf for unseen classes): softmax gives the probabilities back."""
    with np.errstate(divide="ignore"):
        return np.log(au_probe_proba(probe, au_cos, n_classes))
