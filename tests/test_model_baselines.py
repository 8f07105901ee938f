"""Zero-shot, positive-negative prompts and the AU probe on hand-checkable numbers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.model.baselines import (
    au_probe_logits,
    au_probe_proba,
    clip_features,
    cosines,
    fit_au_probe,
    pos_neg_logits,
    softmax,
    zero_shot_logits,
)


def test_clip_feature_is_the_normalised_mean_of_unit_frames() -> None:
    # frames (3, 4) and (0, 2): unit (0.6, 0.8) and (0, 1); mean (0.3, 0.9); norm sqrt(0.9)
    clips = np.array([[[3.0, 4.0], [0.0, 2.0]]], dtype=np.float16)
    want = np.array([[0.3, 0.9]]) / np.sqrt(0.9)
    np.testing.assert_allclose(clip_features(clips), want, rtol=1e-12)
    # a long frame does not outweigh a short one: the frames are normalised before the mean
    assert np.allclose(clip_features(np.array([[[100.0, 0.0], [0.0, 1.0]]])), [[0.5 ** 0.5, 0.5 ** 0.5]])
    with pytest.raises(ValueError, match=r"\[n, T, d\]"):
        clip_features(np.zeros((2, 3)))


def test_zero_shot_logits() -> None:
    f = np.array([[1.0, 0.0], [1.0, 1.0]]) / np.array([[1.0], [2 ** 0.5]])
    classes = np.array([[2.0, 0.0], [0.0, 5.0]])  # raw text features: any norm
    np.testing.assert_allclose(zero_shot_logits(f, classes), [[100, 0], [100 / 2 ** 0.5, 100 / 2 ** 0.5]])
    assert softmax(zero_shot_logits(f, classes))[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="width 2 and text features of width 3"):
        zero_shot_logits(f, np.ones((2, 3)))


def test_pos_neg_logits() -> None:
    f = np.array([[1.0, 0.0]])
    pos = np.array([[3.0, 0.0], [0.0, 1.0]])  # class 0 along x, class 1 along y
    neg = np.array([[-1.0, 0.0], [1.0, 1.0]])  # "no class 0" opposite, "no class 1" at 45 degrees
    # class 0: 100 (1 - (-1)) = 200; class 1: 100 (0 - 1/sqrt 2)
    np.testing.assert_allclose(pos_neg_logits(f, pos, neg), [[200.0, -100 / 2 ** 0.5]])
    with pytest.raises(ValueError, match="pair up"):
        pos_neg_logits(f, pos, neg[:1])


def test_softmax() -> None:
    got = softmax(np.array([[0.0, np.log(3.0)], [1000.0, 1000.0]]))  # large logits do not overflow
    np.testing.assert_allclose(got, [[0.25, 0.75], [0.5, 0.5]])


def test_au_probe_uses_cosines_with_unit_raw_au_features() -> None:
    au_text = np.array([[10.0, 0.0], [0.0, 0.5], [1.0, 1.0]])  # raw: norms differ
    f = clip_features(np.array([[[1.0, 0.0]], [[0.0, 3.0]]]))
    np.testing.assert_allclose(cosines(f, au_text), [[1, 0, 2 ** -0.5], [0, 1, 2 ** -0.5]], atol=1e-12)


def test_au_probe_separates_classes_and_keeps_the_class_order() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 2], 20)  # class 1 of 3 never occurs in the source clips
    au_cos = 0.2 + 0.01 * rng.normal(size=(40, 4))
    au_cos[labels == 2, 1] += 0.03  # a small cosine shift: standardising makes it learnable
    probe = fit_au_probe(au_cos, labels)
    test = np.array([[0.2, 0.2, 0.2, 0.2], [0.2, 0.24, 0.2, 0.2]])
    proba = au_probe_proba(probe, test, n_classes=3)
    assert proba.shape == (2, 3) and np.allclose(proba.sum(1), 1)
    assert (proba[:, 1] == 0).all()
    assert proba.argmax(1).tolist() == [0, 2]
    np.testing.assert_allclose(softmax(au_probe_logits(probe, test, 3)), proba)
    assert np.mean(au_probe_proba(probe, au_cos, 3).argmax(1) == labels) > 0.9
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_au_probe(au_cos[:20], labels[:20])
    with pytest.raises(ValueError, match="outside 0..1"):
        au_probe_proba(probe, test, n_classes=2)
