"""Clips of T frames out of variable-length face sequences (method.md "Clips").

In: the number of face frames of each sample (its sequence ``seq``, in frame order), the
clip length T, the stride s and, for training clips, a numpy ``Generator``. Out: integer
indices [n, T] into each sample's ``seq``; ``gather_clips`` turns them into an array
[n, T, d] of embeddings. With ``strided = seq[::s]``:
- training clip: ``strided[i : i + T]``, i uniform in [0, len(strided) - T];
- evaluation clip: i = (len(strided) - T) // 2;
- len(strided) < T: all of ``strided``, then copies of its last frame (i = 0).
Every method sees the same evaluation clip, so everything goes through ``clip_indices``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def strided_lengths(lengths: np.ndarray, stride: int) -> np.ndarray:
    """len(seq[::stride]) for each length: ceil(n / stride)."""
    return -(-np.asarray(lengths, dtype=np.int64) // stride)


def clip_indices(lengths: Sequence[int] | np.ndarray, clip_len: int, stride: int,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices [n, clip_len] into each sequence: training clips when ``rng`` is given
    (one draw per sample, in sample order), evaluation clips when it is None."""
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip length and stride must be >= 1, got T={clip_len}, stride={stride}")
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    empty = np.flatnonzero(lengths < 1)
    if empty.size:
        raise ValueError(f"sequences {empty[:10].tolist()} have no frames; every sample needs >= 1")
    n_strided = strided_lengths(lengths, stride)
    room = np.maximum(n_strided - clip_len, 0)  # the largest start offset
    start = room // 2 if rng is None else rng.integers(0, room + 1)
    steps = start[:, None] + np.arange(clip_len)[None, :]
    return np.minimum(steps, n_strided[:, None] - 1) * stride  # short: repeat the last frame


def gather_clips(sequences: Sequence[np.ndarray], indices: np.ndarray) -> np.ndarray:
    """Stack each sequence's clip frames: [n, T, d], in the sequences' dtype."""
    if len(sequences) != len(indices):
        raise ValueError(f"{len(sequences)} sequences but {len(indices)} rows of clip indices")
    if not len(sequences):
        return np.zeros((0, indices.shape[-1], 0), dtype=np.float32)
    return np.stack([seq[idx] for seq, idx in zip(sequences, indices)])


class ClipBank:
    """All sequences concatenated once, so that each epoch's clips are one gather."""

    def __init__(self, sequences: Sequence[np.ndarray], dtype: np.dtype | type | None = None) -> None:
        if not len(sequences):
            raise ValueError("no sequences to build clips from")
        dims = {seq.shape[1] if seq.ndim == 2 else None for seq in sequences}
        if len(dims) != 1 or None in dims:
            raise ValueError(f"sequences must all be [n_i, d] with one d, got widths {sorted(map(str, dims))}")
        self.lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.frames = np.concatenate(list(sequences), axis=0, dtype=dtype)  # dtype None: theirs

    def clips(self, rows: np.ndarray, clip_len: int, stride: int,
              rng: np.random.Generator | None = None) -> np.ndarray:
        """Clips [len(rows), T, d] of the samples ``rows`` (see ``clip_indices``)."""
        rows = np.asarray(rows, dtype=np.int64)
        local = clip_indices(self.lengths[rows], clip_len, stride, rng)
        return self.frames[self.offsets[rows][:, None] + local]
