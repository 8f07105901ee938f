"""Benchmark: one target subject's CLIP-AUTT adaptation, from the cache and as the reference does.

In: command-line options (model, clips per subject, frames per clip, steps, repetitions,
subjects for the fan-out, device). Out: tables on stdout, all measured in this one run on
this machine:

1. per-step seconds of one subject (``--clips`` clips of ``--frames`` frames, synthetic
   cached vectors, a random-init head over the default 47-AU bank):
   - ``cache fast``: the project's path (cached frame features, text tower on the first E
     tokens only);
   - ``cache plain``: the same with the full-length text forward (what the fast path buys);
   - ``tower + plain``: what the public reference code does at every step: the image tower
     over every frame of the subject's clips (no gradient) and the plain text path. The
     tower's share is timed on random 224 px crops and added to the measured plain step;
   and the whole subject's time (``--steps`` updates and the final forward) for each;
2. subjects adapted one at a time against ``--batch`` subjects sharing one text forward
   (``adapt.subjects_per_batch``), with the largest difference of their final
   probabilities;
3. the fan-out over 1 and 2 long-lived Ray workers (each loads the text tower once, like the
   pipeline's workers; threads split between them), ``--subjects`` subjects, warm workers.
   Skipped where Ray is not installed (the GPU machine).
Peak memory: the process's peak RSS, and on CUDA the peak allocated.

Run: ``autt bench adapt`` or ``python -m jobs.bench_adapt --model ViT-B-32 --threads 2``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import numpy as np
import torch

from jobs.benchinfo import describe, timed

GOAL_S = 15.0  # a whole subject, two CPU cores


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="autt bench adapt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random init)")
    p.add_argument("--clips", type=int, default=40, help="evaluation clips of the subject")
    p.add_argument("--frames", type=int, default=20, help="frames per clip (T)")
    p.add_argument("--window", type=int, default=16, help="window length L (<= --frames)")
    p.add_argument("--steps", type=int, default=10, help="AdamW updates per subject")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of each cache path")
    p.add_argument("--tower-reps", type=int, default=1,
                   help="timed image-tower passes over the subject's frames (slow on CPU)")
    p.add_argument("--batch", type=int, default=4, help="subjects per text forward in part 2")
    p.add_argument("--subjects", type=int, default=4, help="subjects for the fan-out (part 3)")
    p.add_argument("--workers", default="1,2", help="worker counts for the fan-out; none: skip it")
    p.add_argument("--threads", type=int, default=2, help="torch threads in all (split per worker)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args(argv)
    for name in ("clips", "frames", "window", "reps", "batch", "subjects", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("steps", "tower_reps"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.window > args.frames:
        p.error(f"--window {args.window} is longer than --frames {args.frames}")
    try:
        args.workers = [] if args.workers == "none" else sorted({int(w) for w in args.workers.split(",")})
    except ValueError:
        p.error(f"--workers must be comma-separated integers or none, got {args.workers!r}")
    if args.workers and min(args.workers) < 1:
        p.error(f"--workers must all be >= 1, got {args.workers}")
    return args


class Bench:
    """The frozen parts one worker holds: text tower, prompt tokens, a seeded head."""

    def __init__(self, model: str, device: str, threads: int, keep_image_tower: bool = False) -> None:
        from pipeline.adapt.context import template_tokens
        from pipeline.adapt.text_forward import TextTower
        from pipeline.embed.backbone import load_backbone
        from pipeline.embed.config import EmbedConfig
        from pipeline.embed.prompts import PromptConfig, au_prompts
        from pipeline.model.head import CLIPAUHead, HeadConfig

        torch.set_num_threads(threads)
        bb = load_backbone(EmbedConfig(model=model, weights="random", seed=0, device=device))
        self.device, self.dim, self.image_size = bb.device, bb.embed_dim, bb.image_size
        self.tower = TextTower(bb.model)
        self.tower.requires_grad_(False)
        prompts = au_prompts(PromptConfig())
        self.tokens = template_tokens(self.tower, bb.tokenizer, prompts, PromptConfig().n_ctx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.head = CLIPAUHead(HeadConfig(embed_dim=bb.embed_dim, n_aus=len(prompts), n_classes=2))
        self.head = self.head.to(bb.device).eval().requires_grad_(False)
        self.image = bb.model.visual if keep_image_tower else None

    def adapt(self, subjects: list[np.ndarray], **cfg) -> list:
        from pipeline.adapt.autt import CLIPAUTT, SubjectInputs
        from pipeline.adapt.config import AdaptConfig

        adapter = CLIPAUTT(self.head, self.tower, self.tokens, AdaptConfig(**cfg))
        return adapter.run([SubjectInputs(c) for c in subjects])

    def clips(self, n: int, frames: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=(n, frames, self.dim)).astype(np.float32)

    def tower_seconds(self, n_frames: int, batch: int = 64) -> float:
        """The image tower over ``n_frames`` random crops, no gradient (the reference's
        per-step recomputation of the frame features)."""
        pixels = torch.randn(min(batch, n_frames), 3, self.image_size, self.image_size, device=self.device)

        @torch.inference_mode()
        def tower() -> None:
            for start in range(0, n_frames, batch):
                self.image(pixels[: min(batch, n_frames - start)])

        return timed(tower, self.device)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def single_subject(bench: Bench, args) -> dict[str, dict[str, float]]:
    clips = bench.clips(args.clips, args.frames, seed=1)
    common = dict(steps=args.steps, window=args.window)
    bench.adapt([clips], steps=1, window=args.window)  # warm-up
    rows: dict[str, dict[str, float]] = {}
    for name, fast in (("cache fast", True), ("cache plain", False)):
        per, total = [], []
        for _ in range(args.reps):
            secs = bench.adapt([clips], fast=fast, **common)[0].seconds
            per.append(secs["per_step"])
            total.append(secs["total"])
        rows[name] = {"per_step": statistics.median(per), "min": min(per), "max": max(per),
                      "subject": statistics.median(total)}
    if args.tower_reps:
        n_frames = args.clips * args.frames
        tower = [bench.tower_seconds(n_frames) for _ in range(args.tower_reps)]
        t = statistics.median(tower)
        plain = rows["cache plain"]
        rows["tower + plain"] = {"per_step": plain["per_step"] + t, "min": plain["min"] + min(tower),
                                 "max": plain["max"] + max(tower),
                                 "subject": plain["subject"] + (args.steps + 1) * t}
    return rows


def batched(bench: Bench, args) -> dict[str, float]:
    subjects = [bench.clips(args.clips, args.frames, seed=10 + i) for i in range(args.batch)]
    common = dict(steps=args.steps, window=args.window)
    got: dict[str, list] = {}
    seconds = {}
    for key, n in (("alone", 1), ("together", args.batch)):
        seconds[key] = timed(lambda key=key, n=n: got.setdefault(
            key, bench.adapt(subjects, subjects_per_batch=n, **common)), bench.device)
    diff = max(float(np.abs(a.final_probs - b.final_probs).max())
               for a, b in zip(got["alone"], got["together"]))
    return {**seconds, "max_diff": diff}


class _Worker:
    """A Ray worker of the fan-out: loads the frozen parts once, then adapts subjects."""

    def __init__(self, model: str, threads: int) -> None:
        self.bench = Bench(model, "cpu", threads)

    def run(self, seed: int, clips: int, frames: int, steps: int, window: int) -> float:
        t0 = time.perf_counter()
        self.bench.adapt([self.bench.clips(clips, frames, seed)], steps=steps, window=window)
        return time.perf_counter() - t0


def fan_out(args) -> dict[int, float] | None:
    try:
        import ray
    except ImportError:
        return None
    out: dict[int, float] = {}
    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        for n in args.workers:
            threads = max(1, args.threads // n)
            cls = ray.remote(_Worker).options(num_cpus=args.threads / n * 0.99)
            workers = [cls.remote(args.model, threads) for _ in range(n)]
            ray.get([w.run.remote(0, 2, args.frames, 1, args.window) for w in workers])  # warm
            t0 = time.perf_counter()
            refs = [workers[i % n].run.remote(100 + i, args.clips, args.frames, args.steps, args.window)
                    for i in range(args.subjects)]
            ray.get(refs)
            out[n] = time.perf_counter() - t0
            for w in workers:
                ray.kill(w)
    finally:
        ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("autt bench adapt: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    bench = Bench(args.model, args.device, args.threads, keep_image_tower=args.tower_reps > 0)
    print(f"machine   {describe()} | torch {torch.__version__} | threads {torch.get_num_threads()}")
    print(f"subject   {args.clips} clips x {args.frames} frames, window {args.window}, {args.steps} steps, "
          f"{bench.tokens.n_prompts} AU prompts | {args.model} random init, d {bench.dim} | "
          f"device {bench.device} | reps {args.reps}, tower reps {args.tower_reps}", flush=True)
    rows = single_subject(bench, args)
    print(f"\n{'path':<15}{'s/step median':>15}{'min':>9}{'max':>9}{'s/subject':>11}")
    for name, r in rows.items():
        print(f"{name:<15}{r['per_step']:>15.3f}{r['min']:>9.3f}{r['max']:>9.3f}{r['subject']:>11.2f}")
    fast = rows["cache fast"]
    print(f"fast / plain text path: {rows['cache plain']['per_step'] / fast['per_step']:.2f}x faster per step")
    if "tower + plain" in rows:
        print(f"cache fast / reference (tower + plain): "
              f"{rows['tower + plain']['per_step'] / fast['per_step']:.1f}x faster per step")
    print(f"whole subject {fast['subject']:.2f} s (goal < {GOAL_S:g} s on two cores: "
          f"{'met' if fast['subject'] < GOAL_S else 'NOT met'})", flush=True)
    b = batched(bench, args)
    print(f"\n{args.batch} subjects one at a time {b['alone']:.2f} s | {args.batch} per text forward "
          f"{b['together']:.2f} s ({b['alone'] / b['together']:.2f}x) | max |final prob diff| "
          f"{b['max_diff']:.1e}", flush=True)
    if args.device == "cpu" and args.workers:
        spread = fan_out(args)
        if spread is None:
            print("\nfan-out   skipped: ray is not installed here")
        else:
            base = spread[min(spread)]
            print(f"\n{'workers':<9}{'threads each':>13}{'s for ' + str(args.subjects) + ' subjects':>20}"
                  f"{'subjects/s':>12}{'speed-up':>10}")
            for n, s in spread.items():
                print(f"{n:<9}{max(1, args.threads // n):>13}{s:>20.2f}{args.subjects / s:>12.2f}"
                      f"{base / s:>10.2f}")
    peak = f"peak RSS {_peak_mb():.0f} MB"
    if args.device == "cuda":
        peak += f" | CUDA peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MB"
    print(f"\n{peak}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
