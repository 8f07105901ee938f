"""Benchmark: peak memory of the fused faces+embed pass as the number of samples grows, or
as one video grows longer.

Samples (default): for each sample count (default 4 and 40, a tenfold growth) a fresh child
process ingests a generated dataset of pre-cropped face clips and runs the fused pass over
it in-process (no Ray, one shard after another, exactly the code a Ray actor runs).
Long video (``--long 30,120``): for each length in seconds a video of a real face (the
astronaut, panning) is written frame by frame (never held whole), then a fresh child runs
ingest and the fused pass over that one sample with ``faces.sampling=all``: MTCNN on every
frame, every crop embedded. The child's peak RSS is read from the kernel (``ru_maxrss``).
Memory is bounded by the shard size and, within a sample, by chunks (decode, crops) and
batches (detection, embedding), so the peak should stay flat while samples or seconds
grow. The frame cache (``faces.cache_mb``, a fixed bound kept per face-stage call) is
set by ``--cache-mb`` in the long mode (default 0: every crop is re-decoded). Prints a table.

    python -m jobs.bench_memory [--samples 4,40] [--model ViT-B-32] [--frames 40] [--threads 2]
    python -m jobs.bench_memory --long 30,120 [--fps 10] [--size 320x240] [--cache-mb 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from jobs.benchinfo import describe


def child(n_samples: int, frames: int, model: str, threads: int, workdir: str) -> dict:
    import torch

    from jobs.cli import main as cli
    from pipeline.demo import make_micro

    torch.set_num_threads(threads)
    info = make_micro(os.path.join(workdir, "data"), n_subjects=max(2, n_samples // 2),
                      clips_per_class=1, n_frames=frames, size=224, n_target=1)
    out = os.path.join(workdir, "out")
    common = ["--out", out, "--executor", "local", "--quiet"]
    t0 = time.perf_counter()
    rc = cli(["ingest", "--manifest", info["manifest"], "--classes", "neutral,pain",
              "ingest.shard_size=4", *common])
    rc |= cli(["embed", "--fused", *common, f"embed.model={model}", "embed.weights=random"])
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"samples": info["n_samples"], "frames": info["n_samples"] * frames, "rc": rc,
            "seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}


def write_long_video(path: str, seconds: float, fps: int, width: int, height: int) -> int:
    """An h264 video of a real face panning back and forth, encoded one frame at a time
    (memory independent of the length). Returns the number of frames."""
    import math
    from fractions import Fraction

    import av
    import numpy as np
    from PIL import Image

    from pipeline.demo.face import astronaut

    img = Image.fromarray(astronaut())
    n = int(round(seconds * fps))
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            dx = int(40 + 30 * math.sin(i / 15))  # the head stays in view, moving
            view = img.crop((dx, 0, dx + 360 * width // height, 360)).resize((width, height))
            frame = av.VideoFrame.from_ndarray(np.asarray(view), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return n


def child_long(video: str, model: str, threads: int, cache_mb: int, workdir: str) -> dict:
    import torch

    from jobs.cli import main as cli
    from pipeline.workspace import Workspace

    torch.set_num_threads(threads)
    manifest = os.path.join(workdir, "manifest.csv")
    with open(manifest, "w") as handle:
        handle.write(f"video_id,subject_id,label,path\nlong,s1,neutral,{video}\n")
    out = os.path.join(workdir, "out")
    common = ["--out", out, "--executor", "local", "--quiet"]
    t0 = time.perf_counter()
    rc = cli(["ingest", "--manifest", manifest, "--classes", "neutral,pain", *common])
    rc |= cli(["embed", "--fused", *common, f"embed.model={model}", "embed.weights=random",
               "faces.sampling=all", f"faces.cache_mb={cache_mb}"])
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = next(iter(Workspace(out).markers("faces").values()))["status_counts"]
    return {"rc": rc, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
            "frames": sum(counts.values()), "ok": counts.get("ok", 0) + counts.get("filled", 0)}


def main_long(args: argparse.Namespace) -> int:
    width, height = (int(v) for v in args.size.split("x"))
    rows = []
    for length in [float(x) for x in args.long.split(",")]:
        with tempfile.TemporaryDirectory(prefix="autt-bench-long-") as work:
            video = os.path.join(work, "long.mp4")
            n = write_long_video(video, length, args.fps, width, height)
            cmd = [sys.executable, "-m", "jobs.bench_memory", "--child-long", video,
                   "--model", args.model, "--threads", str(args.threads),
                   "--cache-mb", str(args.cache_mb)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(res.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append({"length": length, "video_frames": n, **row})
    print(f"machine: {describe()}; model {args.model} (random init), {args.threads} torch "
          f"threads, one {width}x{height} {args.fps} fps sample, faces.sampling=all, "
          f"faces.cache_mb={args.cache_mb}, fused faces+embed, in-process (no Ray)")
    print(f"{'video s':>8} {'frames':>7} {'with face':>9} {'seconds':>8} {'peak RSS MB':>12} "
          f"{'vs first':>9}")
    for r in rows:
        ratio = r["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        print(f"{r['length']:>8.0f} {r['frames']:>7} {r['ok']:>9} {r['seconds']:>8} "
              f"{r['peak_rss_mb']:>12} {ratio:>9.2f}")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="autt bench memory", description=__doc__.splitlines()[0])
    ap.add_argument("--samples", default="4,40", help="comma-separated sample counts")
    ap.add_argument("--frames", type=int, default=40, help="frames per sample")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--long", help="comma-separated video lengths in seconds (long-video mode)")
    ap.add_argument("--fps", type=int, default=10, help="long mode: frames per second")
    ap.add_argument("--size", default="320x240", help="long mode: WIDTHxHEIGHT")
    ap.add_argument("--cache-mb", type=int, default=0, help="long mode: faces.cache_mb")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-long", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_long is not None:
        with tempfile.TemporaryDirectory(prefix="autt-bench-mem-") as work:
            print(json.dumps(child_long(args.child_long, args.model, args.threads,
                                        args.cache_mb, work)))
        return 0
    if args.long:
        return main_long(args)
    if args.child is not None:
        with tempfile.TemporaryDirectory(prefix="autt-bench-mem-") as work:
            print(json.dumps(child(args.child, args.frames, args.model, args.threads, work)))
        return 0
    rows = []
    for n in [int(x) for x in args.samples.split(",")]:
        cmd = [sys.executable, "-m", "jobs.bench_memory", "--child", str(n), "--frames",
               str(args.frames), "--model", args.model, "--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"machine: {describe()}; "
          f"model {args.model} (random init), {args.threads} torch threads, shard size 4, "
          "fused faces+embed, pre-cropped 224 px faces, in-process (no Ray)")
    print(f"{'samples':>8} {'frames':>8} {'seconds':>8} {'peak RSS MB':>12} {'vs first':>9}")
    for r in rows:
        ratio = r["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        print(f"{r['samples']:>8} {r['frames']:>8} {r['seconds']:>8} {r['peak_rss_mb']:>12} "
              f"{ratio:>9.2f}")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
