"""Benchmark: EmbedStage throughput against the bare image tower, same machine and threads.

In: command-line options (model, number of crops, batch size, threads, device). Out: a
table on stdout with the machine, crops/s of both paths over several repetitions, and the
ratio stage / bare (goal >= 0.9), plus the preprocessing alone ("prep"), whose share is
the stage's overhead even when other users' load makes the two timings drift. Both paths
run on the same random uint8 crops and the same random-init weights (no download needed);
the bare path gets tensors already normalised and on the device, so the ratio is the price
of the stage's own work: batching, validation, normalisation, host-device copies and the
float32 copy of the output.
Run: ``python -m jobs.bench_embed --model ViT-B-32 --n 256 --threads 2``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import numpy as np
import torch

from jobs.benchinfo import cpu_model, timed
from pipeline.embed.config import EmbedConfig
from pipeline.embed.preprocess import preprocess_batch
from pipeline.embed.stage import EmbedStage

GOAL = 0.9


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench_embed", description=__doc__)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture")
    parser.add_argument("--weights", default="random", help="random | path | pretrained tag")
    parser.add_argument("--n", type=int, default=256, help="crops per repetition")
    parser.add_argument("--batch-size", type=int, default=64, help="crops per forward pass")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="amp_fp16", choices=("amp_fp16", "amp_bf16", "fp32"))
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of each path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each path first")
    args = parser.parse_args(argv)
    for name in ("n", "batch_size", "threads", "reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args




def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = EmbedConfig(model=args.model, weights=args.weights, batch_size=args.batch_size,
                      device=args.device, precision=args.precision)
    stage = EmbedStage(cfg, num_threads=args.threads)
    bb = stage.backbone
    size = bb.image_size
    crops = np.random.default_rng(0).integers(0, 256, (args.n, size, size, 3), dtype=np.uint8)
    ready = preprocess_batch(crops, size, bb.mean, bb.std, device=bb.device)

    @torch.inference_mode()
    def bare() -> None:
        with bb.autocast():
            for start in range(0, args.n, args.batch_size):
                bb.model.encode_image(ready[start : start + args.batch_size])

    def staged() -> None:
        stage({"crop_pixels": crops})

    def prep_only() -> None:  # the stage's own work alone, chunk by chunk as the stage does
        for start in range(0, args.n, args.batch_size):
            preprocess_batch(crops[start : start + args.batch_size], size, bb.mean, bb.std,
                             device=bb.device)

    for _ in range(args.warmup):
        bare()
        staged()
        prep_only()
    rates: dict[str, list[float]] = {"bare": [], "stage": [], "prep": []}
    for rep in range(args.reps):  # alternate the order so drift hits both paths alike
        order = [("bare", bare), ("stage", staged), ("prep", prep_only)]
        for name, fn in order if rep % 2 == 0 else order[::-1]:
            rates[name].append(args.n / timed(fn, bb.device))

    device_name = torch.cuda.get_device_name(bb.device) if bb.device.type == "cuda" else "cpu"
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())  # shared machines: other users' load
    print(f"machine   {platform.node()} | {cpu_model()} | {os.cpu_count()} cores | load {load} | "
          f"{platform.python_version()} | torch {torch.__version__}")
    print(f"device    {device_name} | threads {torch.get_num_threads()} | precision "
          f"{args.precision if bb.device.type == 'cuda' else 'fp32 (cpu)'}")
    print(f"model     {bb.backbone_id} | d {bb.embed_dim} | image {size} | n {args.n} | "
          f"batch {args.batch_size} | warmup {args.warmup} | reps {args.reps}")
    print(f"{'path':<8}{'median crops/s':>16}{'min':>10}{'max':>10}")
    for name, values in rates.items():
        print(f"{name:<8}{statistics.median(values):>16.1f}{min(values):>10.1f}"
              f"{max(values):>10.1f}")
    ratio = statistics.median(rates["stage"]) / statistics.median(rates["bare"])
    # Less sensitive to other users' load: the bare tower plus the preprocessing alone.
    bare_s, prep_s = (1 / statistics.median(rates[k]) for k in ("bare", "prep"))
    print(f"preprocessing share of the stage's time {prep_s / (bare_s + prep_s):.3f} "
          f"(expected ratio without load noise {bare_s / (bare_s + prep_s):.3f})")
    print(f"ratio stage/bare {ratio:.3f} (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
