"""The project's own demo dataset: real-looking face videos made from scikit-image's
astronaut photo, no download.

In: an output folder (local path or fsspec URL) and a ``DemoConfig``.
Out: ``<out>/videos/<subject>/<video_id>.mp4`` (h264), ``<out>/manifest.csv`` (video_id,
subject_id, label, path relative to the manifest's folder, sample_id) and
``<out>/split.csv`` (subject_id, role = source | target; the last ``n_target`` subjects are
targets). Classes are ``neutral`` and ``pain`` (positive last). Every subject has its own
skin tone, lighting and expressiveness, in one shared studio and framing; ``pain`` clips
lower the brows, squeeze the eyes and raise the upper lip inside the expression window, ``neutral``
clips only blink there; both sway the head slightly throughout. The same config gives the
same frames (and, with the same PyAV/x264 build, the same bytes).
"""

from __future__ import annotations

import csv
import io as _stdio
from fractions import Fraction

import numpy as np

from pipeline import io
from pipeline.demo.config import CLASSES, DemoConfig
from pipeline.demo.render import plan_clip, render_clip, sample_appearance, subject_layers

MANIFEST_COLUMNS = ("video_id", "subject_id", "label", "path", "sample_id")
SPLIT_COLUMNS = ("subject_id", "role")
DEFAULT_CONFIG = DemoConfig()


def subject_ids(n: int) -> list[str]:
    return [f"s{i + 1:02d}" for i in range(n)]


def video_id(subject: str, label: str, k: int) -> str:
    return f"{subject}_{label}_{k + 1}"


def subject_rng(seed: int, subject_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, subject_index])


def clip_rngs(seed: int, subject_index: int, class_index: int,
              k: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(head motion, facial action) generators of one clip. Keyed by the clip's identity,
    not by generation order, so adding clips never changes existing ones; the head motion
    leaves out the class, so clip k of each class sways alike (see ``plan_clip``)."""
    return (np.random.default_rng([seed, subject_index, k, 1]),
            np.random.default_rng([seed, subject_index, class_index, k, 2]))


def write_csv(url: str, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    io.write_text_atomic(url, buf.getvalue())


def split_rows(subjects: list[str], n_target: int) -> list[dict[str, str]]:
    n_source = len(subjects) - n_target
    return [{"subject_id": s, "role": "source" if i < n_source else "target"}
            for i, s in enumerate(subjects)]


def encode_mp4(frames: np.ndarray, fps: int, crf: int = 20) -> bytes:
    """h264 (yuv420p) MP4 bytes for uint8 frames (T, H, W, 3), written in memory."""
    import av  # deferred: only the video demo needs it

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} "
                         f"{frames.shape}")
    buf = _stdio.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # mbtree off: with it, x264 (as bundled with PyAV 18) gives different bytes from
        # run to run for the same frames; without it, the output repeats exactly.
        stream.options = {"crf": str(crf), "preset": "medium", "x264-params": "mbtree=0"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return buf.getvalue()


def render_demo_clip(cfg: DemoConfig, subject_index: int, label: str, k: int,
                     layers: np.ndarray | None = None) -> np.ndarray:
    """The frames (T, size, size, 3) of one demo video, before encoding."""
    app = sample_appearance(subject_rng(cfg.seed, subject_index))
    if layers is None:
        layers = subject_layers(app)
    head_rng, face_rng = clip_rngs(cfg.seed, subject_index, CLASSES.index(label), k)
    plan = plan_clip(label, cfg.n_frames, cfg.window, app.expressiveness, cfg.head_motion,
                     head_rng, face_rng)
    return render_clip(layers, app, plan, cfg.size)


def make_demo(out_dir: str, cfg: DemoConfig = DEFAULT_CONFIG) -> dict:
    """Write the demo videos, manifest and split under ``out_dir``; returns
    ``{"manifest", "split", "classes", "n_samples"}`` (the two paths as absolute URLs)."""
    out_dir = io.absolute(out_dir)
    subjects = subject_ids(cfg.n_subjects)
    rows: list[dict[str, str]] = []
    for s, subject in enumerate(subjects):
        layers = subject_layers(sample_appearance(subject_rng(cfg.seed, s)))
        for label in CLASSES:
            for k in range(cfg.videos_per_class):
                vid = video_id(subject, label, k)
                frames = render_demo_clip(cfg, s, label, k, layers)
                rel = f"videos/{subject}/{vid}.mp4"
                io.write_bytes_atomic(io.join(out_dir, rel), encode_mp4(frames, cfg.fps,
                                                                         cfg.crf))
                rows.append({"video_id": vid, "subject_id": subject, "label": label,
                             "path": rel, "sample_id": vid})
    manifest, split = io.join(out_dir, "manifest.csv"), io.join(out_dir, "split.csv")
    write_csv(split, SPLIT_COLUMNS, split_rows(subjects, cfg.n_target))
    write_csv(manifest, MANIFEST_COLUMNS, rows)  # last: its presence means the set is whole
    return {"manifest": manifest, "split": split, "classes": list(CLASSES),
            "n_samples": len(rows)}
