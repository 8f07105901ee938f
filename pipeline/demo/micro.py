"""A micro dataset of pre-cropped face clips for fast rerun, fault and cluster tests.

In: an output folder (local path or fsspec URL) and a few sizes.
Out: ``<out>/faces/<subject>/<video_id>/frame_<i>.png`` (``size`` x ``size`` RGB face
crops; with the default 12 frames, ``frame_10`` sorts before ``frame_2`` unless sorted
numerically), ``<out>/manifest.csv`` (video_id, subject_id, label, path, sample_id, media =
``faces``), ``<out>/split.csv`` (subject_id, role). With ``extra=n``, ``n`` more clips are
written and ``<out>/manifest_plus.csv`` lists the old rows (identical, same order) plus
the new ones, so a test can check that a rerun processes only the new samples. Frames come
from the demo's animation (same subjects and seed give the same faces), framed the way the
face stage crops a detector box. Builds in well under a second.
"""

from __future__ import annotations

import io as _stdio

import numpy as np
from PIL import Image

from pipeline import io
from pipeline.demo.render import plan_clip, render_clip, sample_appearance, subject_layers
from pipeline.demo.synth import (
    CLASSES,
    MANIFEST_COLUMNS,
    SPLIT_COLUMNS,
    clip_rngs,
    split_rows,
    subject_ids,
    subject_rng,
    video_id,
    write_csv,
)

MICRO_COLUMNS = (*MANIFEST_COLUMNS, "media")
WINDOW = (0.3, 0.8)
HEAD_MOTION = 0.006


def _check(name: str, ok: bool, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"micro.{name} {rule}, got {value!r}")


def micro_clips(n_subjects: int, clips_per_class: int, extra: int) -> list[tuple[int, int, int]]:
    """(subject index, class index, clip index) of every clip: the base set first, then
    ``extra`` more, taken subject by subject and class by class at the next clip index."""
    base = [(s, c, k) for s in range(n_subjects) for c in range(len(CLASSES))
            for k in range(clips_per_class)]
    per_round = n_subjects * len(CLASSES)
    more = [((j % per_round) // len(CLASSES), j % len(CLASSES), clips_per_class + j // per_round)
            for j in range(extra)]
    return base + more


def _png(rgb: np.ndarray) -> bytes:
    buf = _stdio.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)  # speed over size
    return buf.getvalue()


def make_micro(out_dir: str, n_subjects: int = 4, clips_per_class: int = 1,
               n_frames: int = 12, size: int = 64, n_target: int = 1, seed: int = 0,
               extra: int = 0) -> dict:
    """Write the micro dataset; returns ``{"manifest", "split", "classes", "n_samples",
    "manifest_plus", "n_samples_plus"}`` (``manifest_plus`` is None when ``extra`` is 0)."""
    _check("n_subjects", n_subjects >= 2, "must be >= 2", n_subjects)
    _check("n_target", 1 <= n_target < n_subjects, "must be in [1, n_subjects - 1]", n_target)
    _check("clips_per_class", clips_per_class >= 1, "must be >= 1", clips_per_class)
    _check("n_frames", n_frames >= 4, "must be >= 4", n_frames)
    _check("size", 16 <= size <= 512, "must be in [16, 512]", size)
    _check("extra", extra >= 0, "must be >= 0", extra)
    out_dir = io.absolute(out_dir)
    subjects = subject_ids(n_subjects)
    looks: dict[int, tuple] = {}
    rows: list[dict[str, str]] = []
    for s, c, k in micro_clips(n_subjects, clips_per_class, extra):
        if s not in looks:
            app = sample_appearance(subject_rng(seed, s))
            looks[s] = (app, subject_layers(app))
        app, layers = looks[s]
        label = CLASSES[c]
        plan = plan_clip(label, n_frames, WINDOW, app.expressiveness, HEAD_MOTION,
                         *clip_rngs(seed, s, c, k))
        # Rendered at twice the size and box-filtered down: the photo's face is ~110 px.
        frames = render_clip(layers, app, plan, size, crop=True, supersample=2)
        vid = video_id(subjects[s], label, k)
        rel = f"faces/{subjects[s]}/{vid}"
        for i, rgb in enumerate(frames):
            io.write_bytes_atomic(io.join(out_dir, rel, f"frame_{i}.png"), _png(rgb))
        rows.append({"video_id": vid, "subject_id": subjects[s], "label": label, "path": rel,
                     "sample_id": vid, "media": "faces"})
    n_base = n_subjects * len(CLASSES) * clips_per_class
    manifest, split = io.join(out_dir, "manifest.csv"), io.join(out_dir, "split.csv")
    write_csv(split, SPLIT_COLUMNS, split_rows(subjects, n_target))
    plus = None
    if extra:
        plus = io.join(out_dir, "manifest_plus.csv")
        write_csv(plus, MICRO_COLUMNS, rows)
    write_csv(manifest, MICRO_COLUMNS, rows[:n_base])
    return {"manifest": manifest, "split": split, "classes": list(CLASSES),
            "n_samples": n_base, "manifest_plus": plus, "n_samples_plus": len(rows)}
