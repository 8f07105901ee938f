"""Benchmark of the face stage: sampled frames per second for decoding alone (a chunk per
call, and in spans as the stage reads what its frame cache keeps), detection alone and the
whole stage (decode, detect, track, crop), per clip and for one batch of all
clips; then, per clip and demo video, the whole stage with per-frame detection (with the
``exact`` resampling of older tables, and ``fast``) against ``detect_mode='keyframe'``:
frames per second of each (best of ``--reps`` runs, alternating) and the ratio, the
keyframe boxes against the per-frame ones (mean IoU over frames with a face in both, the
worst frame, frames with a face in one only) and the cosine of the crops' embeddings.

In: the shared test clips (``../shared/data/faces`` or ``$AUTT_SHARED_DATA/faces``), or
``--clips``; without either, two generated clips; plus ``--demo`` videos of the bundled
demo. Out: tables on stdout with the machine, torch threads and device. Run:
``autt bench faces [--threads 2] [--frames 64] [--keyframe-every 5] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import pipeline  # noqa: F401  (torchvision fix before facenet-pytorch)
from jobs.benchinfo import cpu_model
from pipeline.faces.config import FacesConfig
from pipeline.faces.decode import open_source, sample_indices
from pipeline.faces.shard import WITH_FACE
from pipeline.faces.spans import span_frames
from pipeline.faces.stage import FaceStage
from pipeline.faces.track import iou

CLIPS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "no_face.mp4")



def shared_clips() -> list[str]:
    env = os.environ.get("AUTT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return [str(root / "faces" / c) for c in CLIPS if (root / "faces" / c).is_file()]


def generated_clips(folder: str, frames: int) -> list[str]:
    """Two 640x360 mpeg4 clips of skimage's astronaut moving: one face per frame."""
    import av
    from PIL import Image
    from skimage import data

    face = np.asarray(Image.fromarray(data.astronaut()).resize((300, 300)))
    paths = []
    for k, step in enumerate((2, 4)):
        path = os.path.join(folder, f"generated_{k}.mp4")
        with av.open(path, "w") as out:
            stream = out.add_stream("mpeg4", rate=25)
            stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
            for t in range(frames):
                img = np.full((360, 640, 3), 90, np.uint8)
                x = 40 + (step * t) % 280
                img[30:330, x: x + 300] = face
                out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(stream.encode())
        paths.append(path)
    return paths


def manifest(paths: list[str], frames: int) -> dict[str, np.ndarray]:
    n = len(paths)
    col = lambda v: np.array([v] * n, dtype=object)  # noqa: E731
    return {"sample_id": np.array([Path(p).name for p in paths], dtype=object),
            "video_id": col(None), "subject_id": col(None), "path": np.array(paths, object),
            "media": col("video"), "start": col(0.0), "end": col(float(frames - 1)),
            "time_unit": col("frame"), "shard_id": col("bench")}


def bench_clip(stage: FaceStage, path: str, frames: int) -> dict[str, float | str]:
    cfg = stage.cfg
    t0 = time.perf_counter()
    src = open_source(path, "video", cfg, stage.num_threads or 0)
    idx = sample_indices(src.timestamps, 0, frames - 1, "frame", cfg)
    decoded = [f for chunk in src.chunks(idx, cfg.chunk_frames) for f in chunk]
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()  # as the stage reads when its frame cache keeps the frames
    src = open_source(path, "video", cfg, stage.num_threads or 0)
    span = span_frames(cfg.chunk_frames, src.frame_bytes, cfg.cache_mb * 2**20)
    for _ in src.chunks(idx, span):
        pass
    t_span = time.perf_counter() - t0
    images = [f for f in decoded if not isinstance(f, str)]
    t0 = time.perf_counter()
    found = stage.detect_frames(images)
    t_detect = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = stage(manifest([path], frames))
    t_stage = time.perf_counter() - t0
    h, w = images[0].shape[:2]
    return {"clip": Path(path).name, "size": f"{w}x{h}", "frames": len(idx),
            "faces": sum(len(f) > 0 for f in found), "ok": int((out["status"] == "ok").sum()),
            "decode": len(idx) / t_decode, "span": len(idx) / t_span,
            "detect": len(images) / t_detect,
            "stage": len(idx) / t_stage}


def timed_batch(stage: FaceStage, paths: list[str], frames: int) -> tuple[dict, float, float]:
    """One call of the stage on all clips: its rows, seconds, and the seconds it waited for
    frames (the stage's ``wait`` phase: what the device would idle)."""
    before = stage.seconds["wait"]
    t0 = time.perf_counter()
    out = stage(manifest(paths, frames))
    return out, time.perf_counter() - t0, stage.seconds["wait"] - before


def demo_clips(folder: str, count: int) -> list[str]:
    """``count`` videos of the bundled demo (its default look: 224 px, 40 frames), written
    as the demo writes them: subjects 0, 1, ... alternating the two classes."""
    from pipeline.demo.config import CLASSES, DemoConfig
    from pipeline.demo.synth import encode_mp4, render_demo_clip

    cfg = DemoConfig()
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"demo_{i}.mp4")
        frames = render_demo_clip(cfg, i // 2, CLASSES[i % 2], 0)
        Path(path).write_bytes(encode_mp4(frames, cfg.fps, cfg.crf))
        paths.append(path)
    return paths


def timed_rows(stage: FaceStage, path: str, frames: int) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = stage(manifest([path], frames))
    return out, time.perf_counter() - t0


def compare(every: dict, keyed: dict, embed) -> dict:
    """The keyframe rows against the per-frame rows of one clip: boxes (IoU over frames
    with a face in both modes) and the crops' embeddings (cosine)."""
    face_e, face_k = np.isin(every["status"], WITH_FACE), np.isin(keyed["status"], WITH_FACE)
    both = np.flatnonzero(face_e & face_k)
    overlap = np.array([iou(every["box"][i], keyed["box"][i])[0, 0] for i in both])
    cos, step = np.zeros(0), np.zeros(0)
    if len(both) and embed is not None:
        a, b = embed(every["crop_pixels"][both]), embed(keyed["crop_pixels"][both])
        cos = _cosine(a, b)
        # the scale: per-frame embeddings of one frame against the next
        nxt = np.flatnonzero(np.diff(both) == 1)
        step = _cosine(a[nxt], a[nxt + 1])
    worst = int(np.argmin(overlap)) if len(overlap) else -1
    nan = float("nan")
    return {"carried": int((keyed["status"] == "carried").sum()), "faces": int(face_k.sum()),
            "one_only": int((face_e != face_k).sum()),
            "iou": float(overlap.mean()) if len(overlap) else nan,
            "worst": float(overlap[worst]) if len(overlap) else nan,
            "worst_at": int(both[worst]) if len(overlap) else -1,
            "cos": float(cos.mean()) if len(cos) else nan,
            "cos_min": float(cos.min()) if len(cos) else nan,
            "cos_next": float(step.mean()) if len(step) else nan}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def bench_modes(stages: dict[str, FaceStage], path: str, frames: int, reps: int,
                embed) -> dict:
    """Each stage's best time of ``reps`` runs on one clip (alternating, so drift in the
    machine's load hits all alike) and the keyframe rows against the per-frame rows."""
    best = dict.fromkeys(stages, float("inf"))
    rows: dict[str, dict] = {}
    for rep in range(reps):
        for name in (list(stages) if rep % 2 == 0 else list(stages)[::-1]):
            rows[name], seconds = timed_rows(stages[name], path, frames)
            best[name] = min(best[name], seconds)
    n = len(rows["every"]["status"])
    rates = {name: n / t for name, t in best.items()}
    return {"clip": Path(path).name, "frames": n, "rates": rates,
            "ratio": rates["keyframe"] / rates["every"], **compare(rows["every"],
                                                                  rows["keyframe"], embed)}


def _header(head: str) -> None:
    print(head)
    print("-" * len(head))


def main(argv: list[str] | None = None) -> int:  # noqa: C901
    ap = argparse.ArgumentParser(prog="python -m jobs.bench_faces", description=__doc__)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--frames", type=int, default=64, help="first N frames of each clip")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--detect-size", type=int, default=FacesConfig.detect_size)
    ap.add_argument("--clips", nargs="*", help="video files (default: the shared clips)")
    ap.add_argument("--demo", type=int, default=4, help="demo videos in the comparison")
    ap.add_argument("--keyframe-every", type=int, default=FacesConfig.keyframe_every,
                    help="keyframe mode's interval for the comparison (0: skip it)")
    ap.add_argument("--keyframe-shrink", default="on" if FacesConfig.keyframe_shrink else "off",
                    choices=("on", "off"))
    ap.add_argument("--reps", type=int, default=3, help="runs per mode and clip (best kept)")
    ap.add_argument("--embed-model", default="autt-tiny",
                    help="image tower for the crops' cosine ('none': skip)")
    ap.add_argument("--embed-weights", default="random")
    ap.add_argument("--prefetch", default=FacesConfig.prefetch, choices=("auto", "on", "off"),
                    help="decode the next chunk in a thread (auto: on a GPU)")
    args = ap.parse_args(argv)
    if args.reps < 1 or args.frames < 1 or args.demo < 0:
        ap.error("--reps and --frames must be >= 1, --demo >= 0")

    import torch

    base = FacesConfig(device=args.device, detect_size=args.detect_size, prefetch=args.prefetch)
    cfg = replace(base, detect_mode="every")
    stage = FaceStage(cfg, num_threads=args.threads)
    embed = None
    if args.embed_model != "none":
        from pipeline.embed.config import EmbedConfig
        from pipeline.embed.stage import EmbedStage

        embed = EmbedStage(EmbedConfig(model=args.embed_model, weights=args.embed_weights,
                                       device=args.device), num_threads=args.threads).embed
    with tempfile.TemporaryDirectory(prefix="bench-faces-") as tmp:
        paths = args.clips or shared_clips() or generated_clips(tmp, args.frames)
        # warm-up on real frames: the first faces found cost one-off set-up in every net
        first = open_source(paths[0], "video", cfg).read([0, 1])
        stage.detect_frames([f for f in first if not isinstance(f, str)])
        rows = [bench_clip(stage, p, args.frames) for p in paths]
        out, t_all, waited = timed_batch(stage, paths, args.frames)
        phases = dict(stage.seconds)
        keyed = []
        if args.keyframe_every > 0:
            stages = {"every": stage, "exact": FaceStage(replace(cfg, resample="exact"),
                                                         num_threads=args.threads),
                      "keyframe": FaceStage(replace(base, detect_mode="keyframe",
                                                    keyframe_every=args.keyframe_every,
                                                    keyframe_shrink=args.keyframe_shrink == "on"),
                                            num_threads=args.threads)}
            for extra in stages.values():
                extra.detect_frames([f for f in first if not isinstance(f, str)])
            clips = paths + demo_clips(tmp, args.demo)
            keyed = [bench_modes(stages, p, args.frames, args.reps, embed) for p in clips]
            key_phases = dict(stages["keyframe"].seconds)
            key_out, key_all, key_waited = timed_batch(stages["keyframe"], paths, args.frames)

    print(f"machine: {platform.node()} {platform.machine()} | CPU: {cpu_model()} | "
          f"cores: {os.cpu_count()} | load: {os.getloadavg()[0]:.2f}")
    print(f"torch {torch.__version__}: threads {torch.get_num_threads()} | device "
          f"{stage.device} | detect_size {cfg.detect_size} | detect_batch {cfg.detect_batch} "
          f"| crop {cfg.crop_size} | resample {cfg.resample}")
    _header(f"{'clip':28s} {'size':>9s} {'frames':>6s} {'faces':>5s} {'ok':>4s} "
            f"{'decode f/s':>10s} {'spans f/s':>9s} {'detect f/s':>10s} {'stage f/s':>9s}")
    for r in rows:
        print(f"{r['clip']:28s} {r['size']:>9s} {r['frames']:6d} {r['faces']:5d} {r['ok']:4d} "
              f"{r['decode']:10.1f} {r['span']:9.1f} {r['detect']:10.1f} {r['stage']:9.1f}")
    n = len(out["status"])
    print(f"{'one batch of all clips':28s} {'':>9s} {n:6d} {'':>5s} "
          f"{int((out['status'] == 'ok').sum()):4d} {'':>10s} {'':>9s} {'':>10s} "
          f"{n / t_all:9.1f}")
    print("stage seconds by phase (all calls; wait is part of decode or overlaps it): "
          + ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()))
    prefetch = "on" if stage.prefetching else "off"
    print(f"one batch of all clips, decode included (prefetch {args.prefetch}: {prefetch}): "
          f"per-frame detection {n / t_all:.1f} f/s, waiting for frames {waited:.2f} s of "
          f"{t_all:.2f} s ({100 * waited / t_all:.0f} %)", end="")
    if keyed:
        print(f"; keyframe mode {len(key_out['status']) / key_all:.1f} f/s, waiting "
              f"{key_waited:.2f} s of {key_all:.2f} s ({100 * key_waited / key_all:.0f} %)")
    else:
        print()
    if keyed:
        print(f"\nwhole stage, best of {args.reps} runs per clip: per-frame detection "
              f"(resample exact: the float kernels of tables made before 'fast', and fast) "
              f"against keyframe mode (keyframe_every {args.keyframe_every}, keyframe_shrink "
              f"{args.keyframe_shrink}); IoU and the crops' embedding cosine over frames with "
              f"a face in both modes (embeddings: {args.embed_model}, {args.embed_weights}; "
              f"cos next: per-frame embeddings of a frame and the next, for scale)")
        _header(f"{'clip':28s} {'exact f/s':>9s} {'every f/s':>9s} {'key f/s':>8s} "
                f"{'ratio':>6s} {'faces':>5s} {'carried':>7s} {'one only':>8s} {'mean IoU':>8s} "
                f"{'worst IoU @frame':>16s} {'cos mean':>8s} {'cos min':>7s} {'cos next':>8s}")
        for k in keyed:
            r = k["rates"]
            print(f"{k['clip']:28s} {r['exact']:9.1f} {r['every']:9.1f} {r['keyframe']:8.1f} "
                  f"{k['ratio']:6.2f} {k['faces']:5d} {k['carried']:7d} {k['one_only']:8d} "
                  f"{k['iou']:8.3f} {k['worst']:10.3f} @{k['worst_at']:<4d} {k['cos']:8.4f} "
                  f"{k['cos_min']:7.4f} {k['cos_next']:8.4f}")
        print("keyframe mode, seconds by phase (all runs; wait as above): "
              + ", ".join(f"{k} {v:.2f}s" for k, v in key_phases.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
