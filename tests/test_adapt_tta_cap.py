"""TTA-CaP (frozen-cache variant): prototypes, subject matching, gates, retrieval, per-video reset."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from pipeline.adapt.tta_cap import (
    TTACaPConfig,
    _retrieve,
    class_prototypes,
    frechet_diag,
    nearest_sources,
    run_video,
    source_bank,
    subject_stats,
    tta_cap_subject,
)

CFG = TTACaPConfig()
TEXT = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # class 0 along x, class 1 along y


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_retrieval_is_the_affinity_weighted_mean_of_the_top_k() -> None:
    store = unit([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0, 1]])
    query = np.array([1.0, 0, 0])
    got = _retrieve(query, store, TTACaPConfig(top_k=2))
    w = np.array([1.0, np.exp(-10 * 0.2)])  # cos 1 and 0.8; the cos-0 entries are not retrieved
    np.testing.assert_allclose(got, (w[:, None] * store[:2]).sum(0) / w.sum())
    assert not _retrieve(query, np.zeros((0, 3)), CFG).any()


def test_confidence_routes_frames_into_the_caches() -> None:
    protos, classes = unit([[1, 0, 0], [0, 1, 0]]), np.array([0, 1])
    _, frames_logits, counts = run_video(unit([[1, 0, 0.1]]), TEXT, protos, classes)
    fused = unit(unit([1, 0, 0.1]) + _retrieve(unit([1, 0, 0.1]), protos, CFG))
    np.testing.assert_allclose(frames_logits[0], 100 * TEXT @ fused)  # nothing cached yet
    assert counts == (1, 0)  # confident, agreed by prototypes and by its own 1-frame history
    # Near the diagonal: p = (0.75, 0.25), entropy 0.56 nats -> the negative cache
    theta = np.pi / 4 - np.arcsin(np.log(3) / 100 / np.sqrt(2))
    e = np.array([np.cos(theta), np.sin(theta), 0.0])
    neg_protos = unit([e, [-1, 0, 0]])  # class 0's prototype is the frame; class 1's far away
    _, logits, counts = run_video(e[None], TEXT, neg_protos, np.array([0, 1]))
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert 0.5 <= -(p * np.log(p)).sum() < 0.8
    assert counts == (0, 1)


def test_the_temporal_gate_needs_a_majority_of_the_last_three() -> None:
    protos, classes = unit([[1, 0, 0], [0, 1, 0]]), np.array([0, 1])
    x, y = [1.0, 0, 0], [0, 1.0, 0]
    # predictions 0, 1, 1: frame 1 has history (0, 1), no majority; frame 2 has (0, 1, 1)
    assert run_video(unit([x, y, y]), TEXT, protos, classes)[2] == (2, 0)
    # predictions 0, 0, 1, 0: frame 2 has (0, 0, 1): no; frame 3 has (0, 1, 0): yes
    assert run_video(unit([x, x, y, x]), TEXT, protos, classes)[2] == (3, 0)


def test_the_prototype_gate_needs_agreement_with_a_margin() -> None:
    e = unit([0.6, 0, 0.8])
    protos = unit([[0, 0, 1], [-1, 0, 0]])
    logits = run_video(e[None], TEXT, protos, np.array([1, 0]))[1]
    assert logits[0].argmax() == 0  # the text says class 0 ...
    assert run_video(e[None], TEXT, protos, np.array([1, 0]))[2] == (0, 0)  # ... the prototypes say 1
    assert run_video(e[None], TEXT, protos, np.array([0, 1]))[2] == (1, 0)  # agreement: admitted
    close = unit([[0, 0, 1], [0.62, 0, 0.78]])  # agreement by a margin of about 0.01 only
    assert run_video(e[None], TEXT, close, np.array([0, 1]))[2] == (0, 0)


def test_caches_reset_for_every_video() -> None:
    rng = np.random.default_rng(0)
    clips = rng.normal(size=(3, 12, 3)) + np.array([2.0, 0.5, 0])  # biased towards class 0: caches fill
    bank = source_bank(rng.normal(size=(6, 12, 3)), ["s1", "s1", "s2", "s2", "s3", "s3"], [0, 1, 0, 1, 0, 1])
    alone = tta_cap_subject(clips[1:2], TEXT, bank)
    after = tta_cap_subject(clips, TEXT, bank)  # same 3 neighbours: the bank has 3 subjects
    assert alone.neighbours == after.neighbours
    np.testing.assert_array_equal(after.logits[1], alone.logits[0])
    np.testing.assert_array_equal(after.frame_logits[1], alone.frame_logits[0])
    assert after.cached.sum() > 0
    np.testing.assert_allclose(after.logits, after.frame_logits.mean(axis=1))
    np.testing.assert_array_equal(after.preds, after.logits.argmax(axis=1))


def test_prototypes_are_dbscan_medoids_with_a_fallback() -> None:
    rng = np.random.default_rng(1)
    centres = unit([[1, 0, 0, 0], [0, 0, 1, 0]])
    frames = unit(np.concatenate([centres[0] + 0.02 * rng.normal(size=(30, 4)),
                                  centres[1] + 0.02 * rng.normal(size=(30, 4)),
                                  unit(rng.normal(size=(3, 4)))]))
    protos = class_prototypes(frames, CFG)
    assert len(protos) == 2
    assert all(any(np.allclose(p, f) for f in frames) for p in protos)  # medoids are frames
    assert sorted(np.argmax(protos @ centres.T, axis=1).tolist()) == [0, 1]
    for i, proto in enumerate(protos[np.argsort(np.argmax(protos @ centres.T, axis=1))]):
        members = frames[30 * i:30 * (i + 1)]  # a medoid sits in the middle of its cluster
        assert proto @ centres[i] >= np.quantile(members @ centres[i], 0.5)
    few = unit(rng.normal(size=(4, 4)))  # too few for DBSCAN: the frame nearest the mean
    np.testing.assert_array_equal(class_prototypes(few, CFG)[0], few[np.argmax(few @ unit(few.mean(0)))])


def test_statistics_and_nearest_source_subjects() -> None:
    frames = np.array([[1.0, 0.0], [3.0, 0.0]])
    mean, var = subject_stats(frames, 0.05)
    np.testing.assert_allclose(mean, [2.0, 0.0])
    np.testing.assert_allclose(var, [0.95 * 1 + 0.05 * 0.5, 0.05 * 0.5])
    assert frechet_diag(np.zeros(2), np.ones(2), np.ones(2), 4 * np.ones(2)) == pytest.approx(2 + 2 * 1)
    rng = np.random.default_rng(2)
    clips = np.concatenate([rng.normal(size=(2, 10, 3)) + shift for shift in ([5, 0, 0], [0, 5, 0], [0, 0, 5],
                                                                               [5, 1, 0], [5, 0, 1])])
    names = np.repeat(["x", "y", "z", "x1", "x2"], 2)
    bank = source_bank(clips, names, np.tile([0, 1], 5))
    target = unit(rng.normal(size=(40, 3)) + [5, 0.4, 0.4])
    assert sorted(nearest_sources(target, bank, CFG)) == ["x", "x1", "x2"]


def test_the_target_side_takes_no_labels() -> None:
    params = inspect.signature(tta_cap_subject).parameters
    assert list(params) == ["clips", "class_text", "bank", "cfg"]
    with pytest.raises(ValueError, match="one of each per clip"):
        source_bank(np.zeros((2, 4, 3)), ["a"], [0, 1])
