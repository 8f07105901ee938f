"""Training and evaluation clips, checked against hand-worked indices."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.model.clips import ClipBank, clip_indices, gather_clips, strided_lengths


def test_strided_lengths() -> None:
    assert strided_lengths(np.array([1, 9, 10, 11]), 2).tolist() == [1, 5, 5, 6]
    assert strided_lengths(np.array([7]), 1).tolist() == [7]


def test_evaluation_clips_by_hand() -> None:
    # len 10, s 2: strided = frames 0 2 4 6 8; T 3: i = (5 - 3) // 2 = 1 -> 2 4 6
    # len 9, s 2: strided = 0 2 4 6 8 (the same five); len 12: 0..10 (six), i = 1 -> 2 4 6
    # len 3, s 2: strided = 0 2, shorter than T: 0 2 then the last frame again
    # len 1: the one frame three times
    got = clip_indices([10, 9, 12, 3, 1], clip_len=3, stride=2)
    assert got.tolist() == [[2, 4, 6], [2, 4, 6], [2, 4, 6], [0, 2, 2], [0, 0, 0]]
    # s 1, len 8, T 3: i = 2; len 3 = T exactly: i = 0
    assert clip_indices([8, 3], 3, 1).tolist() == [[2, 3, 4], [0, 1, 2]]
    # the papers' BioVid numbers: 75 frames, s 2 -> 38 strided, T 20 -> i = 9 -> frames 18..56
    assert clip_indices([75], 20, 2)[0].tolist() == list(range(18, 57, 2))


def test_training_clips_start_uniformly_in_the_allowed_range() -> None:
    # len 10, s 2, T 3: i in {0, 1, 2}; the draw is rng.integers(0, room + 1) per sample
    rng = np.random.default_rng(5)
    starts = {clip_indices([10], 3, 2, rng)[0, 0] // 2 for _ in range(200)}
    assert starts == {0, 1, 2}
    lengths = np.array([10, 3, 40, 20])
    got = clip_indices(lengths, 3, 2, np.random.default_rng(11))
    want_start = np.random.default_rng(11).integers(0, np.array([2, 0, 17, 7]) + 1)
    assert got[:, 0].tolist() == (2 * want_start).tolist()
    assert (np.diff(got[[0, 2, 3]], axis=1) == 2).all()
    assert got[1].tolist() == [0, 2, 2]  # short: no freedom, same as evaluation


def test_training_clips_follow_the_generator() -> None:
    lengths = [30, 50, 7]
    a = clip_indices(lengths, 5, 1, np.random.default_rng(3))
    b = clip_indices(lengths, 5, 1, np.random.default_rng(3))
    assert np.array_equal(a, b)
    rng = np.random.default_rng(3)
    first, second = clip_indices(lengths, 5, 1, rng), clip_indices(lengths, 5, 1, rng)
    assert not np.array_equal(first, second)  # fresh offsets per call (epoch)


def test_gather_and_bank_agree() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 4)).astype(np.float32) for n in (10, 3, 25)]
    idx = clip_indices([10, 3, 25], 4, 2)
    clips = gather_clips(seqs, idx)
    assert clips.shape == (3, 4, 4) and clips.dtype == np.float32
    assert np.array_equal(clips[1], seqs[1][[0, 2, 2, 2]])
    bank = ClipBank(seqs)
    assert np.array_equal(bank.clips(np.arange(3), 4, 2), clips)
    assert np.array_equal(bank.clips(np.array([2, 0]), 4, 2), clips[[2, 0]])
    train = bank.clips(np.arange(3), 4, 2, np.random.default_rng(9))
    assert np.array_equal(train, gather_clips(seqs, clip_indices([10, 3, 25], 4, 2, np.random.default_rng(9))))


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match=r"sequences \[1\] have no frames"):
        clip_indices([4, 0], 3, 1)
    with pytest.raises(ValueError, match="T=0"):
        clip_indices([4], 0, 1)
    with pytest.raises(ValueError, match="one d"):
        ClipBank([np.zeros((3, 4)), np.zeros((3, 5))])
