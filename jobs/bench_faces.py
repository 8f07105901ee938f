"""Benchmark of the face stage: sampled frames per second for decoding alone, detection
alone and the whole stage (decode, detect, track, crop), per clip and for one batch of all
clips; then the whole stage with ``detect_mode='keyframe'`` against per-frame detection:
frames per second of each and the ratio, and the keyframe boxes against the per-frame ones
(mean IoU over frames with a face in both, the worst frame, frames with a face in one only).

In: the shared test clips (``../shared/data/faces`` or ``$AUTT_SHARED_DATA/faces``), or
``--clips``; without either, two generated clips. Out: a table on stdout with the machine,
torch threads and device. Run: ``python -m jobs.bench_faces [--threads 2] [--frames 64] [--keyframe-every 5]``.
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
            "decode": len(idx) / t_decode, "detect": len(images) / t_detect,
            "stage": len(idx) / t_stage, "rows": out}


def bench_keyframe(stage: FaceStage, path: str, frames: int, every: dict) -> dict:
    """The whole stage in keyframe mode on one clip against the per-frame row ``every``."""
    t0 = time.perf_counter()
    out = stage(manifest([path], frames))
    rate = len(out["status"]) / (time.perf_counter() - t0)
    ref = every["rows"]
    face_e, face_k = np.isin(ref["status"], WITH_FACE), np.isin(out["status"], WITH_FACE)
    both = np.flatnonzero(face_e & face_k)
    overlap = np.array([iou(ref["box"][i], out["box"][i])[0, 0] for i in both])
    worst = int(np.argmin(overlap)) if len(overlap) else -1
    return {"clip": every["clip"], "every": every["stage"], "keyframe": rate,
            "ratio": rate / every["stage"], "carried": int((out["status"] == "carried").sum()),
            "faces": int(face_k.sum()), "one_only": int((face_e != face_k).sum()),
            "iou": float(overlap.mean()) if len(overlap) else float("nan"),
            "worst": float(overlap[worst]) if len(overlap) else float("nan"),
            "worst_at": int(both[worst]) if len(overlap) else -1}


def _header(head: str) -> None:
    print(head)
    print("-" * len(head))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.bench_faces", description=__doc__)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--frames", type=int, default=64, help="first N frames of each clip")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--detect-size", type=int, default=FacesConfig.detect_size)
    ap.add_argument("--clips", nargs="*", help="video files (default: the shared clips)")
    ap.add_argument("--keyframe-every", type=int, default=FacesConfig.keyframe_every,
                    help="keyframe mode's interval for the comparison (0: skip it)")
    args = ap.parse_args(argv)

    import torch

    cfg = FacesConfig(device=args.device, detect_size=args.detect_size)
    stage = FaceStage(cfg, num_threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-faces-") as tmp:
        paths = args.clips or shared_clips() or generated_clips(tmp, args.frames)
        # warm-up on real frames: the first faces found cost one-off set-up in every net
        first = open_source(paths[0], "video", cfg).read([0, 1])
        stage.detect_frames([f for f in first if not isinstance(f, str)])
        rows = [bench_clip(stage, p, args.frames) for p in paths]
        t0 = time.perf_counter()
        out = stage(manifest(paths, args.frames))
        t_all = time.perf_counter() - t0
        keyed = []
        if args.keyframe_every > 0:
            kf = FaceStage(replace(cfg, detect_mode="keyframe",
                                   keyframe_every=args.keyframe_every), num_threads=args.threads)
            kf.detect_frames([f for f in first if not isinstance(f, str)])
            keyed = [bench_keyframe(kf, p, args.frames, r) for p, r in zip(paths, rows,
                                                                          strict=True)]

    print(f"machine: {platform.node()} {platform.machine()} | CPU: {cpu_model()} | "
          f"cores: {os.cpu_count()} | load: {os.getloadavg()[0]:.2f}")
    print(f"torch {torch.__version__}: threads {torch.get_num_threads()} | device "
          f"{stage.device} | detect_size {cfg.detect_size} | detect_batch {cfg.detect_batch} "
          f"| crop {cfg.crop_size}")
    _header(f"{'clip':28s} {'size':>9s} {'frames':>6s} {'faces':>5s} {'ok':>4s} "
            f"{'decode f/s':>10s} {'detect f/s':>10s} {'stage f/s':>9s}")
    for r in rows:
        print(f"{r['clip']:28s} {r['size']:>9s} {r['frames']:6d} {r['faces']:5d} {r['ok']:4d} "
              f"{r['decode']:10.1f} {r['detect']:10.1f} {r['stage']:9.1f}")
    n = len(out["status"])
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in stage.seconds.items())
    print(f"{'one batch of all clips':28s} {'':>9s} {n:6d} {'':>5s} "
          f"{int((out['status'] == 'ok').sum()):4d} {'':>10s} {'':>10s} {n / t_all:9.1f}")
    print(f"stage seconds by phase (all calls): {phases}")
    if keyed:
        print(f"\nkeyframe mode (keyframe_every {args.keyframe_every}) against per-frame "
              f"detection, whole stage; IoU over frames with a face in both modes")
        _header(f"{'clip':28s} {'every f/s':>9s} {'key f/s':>8s} {'ratio':>6s} {'faces':>5s} "
                f"{'carried':>7s} {'one only':>8s} {'mean IoU':>8s} {'worst IoU @frame':>16s}")
        for k in keyed:
            print(f"{k['clip']:28s} {k['every']:9.1f} {k['keyframe']:8.1f} {k['ratio']:6.2f} "
                  f"{k['faces']:5d} {k['carried']:7d} {k['one_only']:8d} {k['iou']:8.3f} "
                  f"{k['worst']:10.3f} @{k['worst_at']:<4d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
