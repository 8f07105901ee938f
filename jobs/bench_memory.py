"""Benchmark: peak memory of the fused faces+embed pass as the number of samples grows.

For each sample count (default 4 and 40, a tenfold growth) a fresh child process ingests a
generated dataset of pre-cropped face clips and runs the fused pass over it in-process (no
Ray, one shard after another, exactly the code a Ray actor runs). The child's peak RSS is
read from the kernel (``ru_maxrss``). Memory is bounded by the shard size, so the peak
should stay flat while the samples grow. Prints a table.

    python -m jobs.bench_memory [--samples 4,40] [--model ViT-B-32] [--frames 40] [--threads 2]
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="autt bench memory", description=__doc__.splitlines()[0])
    ap.add_argument("--samples", default="4,40", help="comma-separated sample counts")
    ap.add_argument("--frames", type=int, default=40, help="frames per sample")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
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
