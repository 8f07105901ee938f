"""Benchmark: CLIP-AU training from the embedding cache, against recomputing the image tower.

In: command-line options (sizes, model, repetitions, threads). Out: a table on stdout, in
one run on one machine:
- ``cache step``: one AdamW step of the head on a batch of clips gathered from cached
  frame embeddings (what ``train_head`` does), median over ``--steps`` steps;
- ``tower step``: the same step, but the clips' face crops (uint8, 224 px) first go
  through the frozen image tower (preprocessing + ``encode_image`` without gradients),
  as the public reference code does every step; median over ``--reps`` steps;
- ``full training``: ``train_head`` for ``--epochs`` epochs on a synthetic cache the size
  of BioVid's source split (``--subjects`` x ``--samples`` sequences of ``--frames``
  raw ``--dim``-wide vectors carrying a class signal), timed end to end (clip bank,
  every epoch, validation, model choice), plus the time to make the synthetic vectors.
Each row runs in a fresh child process, so its peak RSS (``ru_maxrss``) is its own
(``--in-process`` runs them in one process, for quick checks).
Weights are random (no download): the arithmetic is that of real weights.

Run: ``autt bench train`` (defaults: ViT-B-32, 77 x 40 x 75, d = 512, K = 47, 10 epochs).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from jobs.benchinfo import describe

ROWS = ("cache", "tower", "train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="autt bench train", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32", help="open_clip architecture of the tower step")
    ap.add_argument("--subjects", type=int, default=77, help="source subjects of the synthetic cache")
    ap.add_argument("--samples", type=int, default=40, help="samples per subject")
    ap.add_argument("--frames", type=int, default=75, help="face frames per sample")
    ap.add_argument("--dim", type=int, default=512, help="embedding width of the synthetic cache")
    ap.add_argument("--aus", type=int, default=47, help="AU prompts K")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the full training")
    ap.add_argument("--batch-size", type=int, default=8, help="clips per step")
    ap.add_argument("--clip-len", type=int, default=20, help="T: frames per clip")
    ap.add_argument("--steps", type=int, default=50, help="timed cache steps")
    ap.add_argument("--reps", type=int, default=3, help="timed tower steps")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--in-process", action="store_true",
                    help="run the rows in this process (quick checks: peak RSS is then shared)")
    ap.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name in ("subjects", "samples", "frames", "dim", "aus", "epochs", "batch_size", "clip_len",
                 "steps", "reps", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.subjects < 2:
        ap.error(f"--subjects must be >= 2 (one is held out for validation), got {args.subjects}")
    return args


def synthetic_cache(n_subjects: int, per_subject: int, frames: int, dim: int, n_aus: int,
                    seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """(sequences [frames, dim] float32, labels, subject ids, raw AU text features [K, dim]):
    a class direction plus a per-subject offset plus frame noise, half the samples per class."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=dim).astype(np.float32) * 2.0
    class_dir = rng.normal(size=(2, dim)).astype(np.float32) * 0.5
    seqs, labels, subjects = [], [], []
    for s in range(n_subjects):
        offset = rng.normal(size=dim).astype(np.float32)
        for i in range(per_subject):
            c = i % 2
            noise = rng.standard_normal(size=(frames, dim), dtype=np.float32)
            seqs.append(common + offset + class_dir[c] + noise)
            labels.append(c)
            subjects.append(f"subject{s:03d}")
    text = rng.normal(size=(n_aus, dim)).astype(np.float32)
    return seqs, np.array(labels, dtype=np.int64), np.array(subjects, dtype=object), text


class _Step:
    """One AdamW step of a fresh head on clips [B, T, d] (the body of ``train_head``'s loop)."""

    def __init__(self, dim: int, n_aus: int, text: np.ndarray) -> None:
        import torch

        from pipeline.model.head import CLIPAUHead, HeadConfig
        from pipeline.model.train import make_optimizer

        torch.manual_seed(0)
        self.head = CLIPAUHead(HeadConfig(embed_dim=dim, n_aus=n_aus, n_classes=2))
        self.opt = make_optimizer(self.head.parameters(), lr=1e-3, weight_decay=1e-4)
        self.text = torch.tensor(text)

    def __call__(self, clips, labels) -> float:
        import torch.nn.functional as F

        loss = F.cross_entropy(self.head(clips, self.text).logits, labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def _timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def child(which: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    b, t = args.batch_size, args.clip_len
    labels = torch.from_numpy(rng.integers(0, 2, size=b))
    row: dict = {"row": which}
    if which == "cache":
        from pipeline.model.clips import ClipBank

        seqs, _, _, text = synthetic_cache(2, 2 * b, 2 * t, args.dim, args.aus)
        bank, step = ClipBank(seqs, dtype=np.float32), _Step(args.dim, args.aus, text)
        rows = np.arange(b)

        def one() -> None:
            step(torch.from_numpy(bank.clips(rows, t, 1, rng)), labels)

        one()  # warm-up
        times = _timed(one, args.steps)
    elif which == "tower":
        from pipeline.embed.backbone import load_backbone
        from pipeline.embed.config import EmbedConfig
        from pipeline.embed.preprocess import preprocess_batch

        bb = load_backbone(EmbedConfig(model=args.model, weights="random", device="cpu"))
        size = bb.image_size
        crops = rng.integers(0, 256, size=(b * t, size, size, 3), dtype=np.uint8)
        step = _Step(bb.embed_dim, args.aus, rng.normal(size=(args.aus, bb.embed_dim)).astype(np.float32))

        def one(n: int = b) -> None:
            with torch.no_grad():
                x = preprocess_batch(crops[:n * t], size, bb.mean, bb.std, bb.interpolation, bb.resize_mode)
                frames = bb.model.encode_image(x).float().reshape(n, t, -1)
            step(frames, labels[:n])

        one(1)  # warm-up on one clip: a full step takes many seconds on a CPU
        times = _timed(one, args.reps)
        row["dim"] = bb.embed_dim
    else:
        from pipeline.model.train import TrainConfig, train_head

        start = time.perf_counter()
        seqs, y, subjects, text = synthetic_cache(args.subjects, args.samples, args.frames, args.dim,
                                                  args.aus)
        row["make_s"] = time.perf_counter() - start
        cfg = TrainConfig(epochs=args.epochs, batch_size=b, clip_len=t)
        start, cpu = time.perf_counter(), time.process_time()
        result = train_head(seqs, y, subjects, text, 2, cfg)
        times = [time.perf_counter() - start]
        row["cpu_s"] = time.process_time() - cpu
        row.update(val_f1=result.metrics["val_f1"], n_train=result.metrics["n_train"],
                   steps=args.epochs * -(-result.metrics["n_train"] // b))
    row.update(median_s=statistics.median(times), min_s=min(times), max_s=max(times), n=len(times),
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def run_child(which: str, argv: list[str]) -> dict:
    cmd = [sys.executable, "-m", "jobs.bench_train", *argv, "--child", which]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"bench train: the {which} child failed (exit {res.returncode}):\n"
                           f"{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, rows: dict[str, dict]) -> str:
    cache, tower, train = rows["cache"], rows["tower"], rows["train"]
    n_frames = args.subjects * args.samples * args.frames
    lines = [
        f"machine: {describe()}; {args.threads} torch threads, CPU float32",
        f"steps: batch {args.batch_size} clips x T={args.clip_len} frames; head d={args.dim} (cache), "
        f"d={tower.get('dim')} ({args.model} random init, tower); K={args.aus}",
        f"{'row':<44} {'median s':>10} {'min s':>9} {'max s':>9} {'n':>4} {'peak RSS MB':>12}",
    ]
    for label, r in ((f"cache step (d={args.dim})", cache),
                     (f"tower step ({args.model} on {args.batch_size * args.clip_len} crops)", tower),
                     (f"full training ({args.epochs} epochs, {train['steps']} steps)", train)):
        lines.append(f"{label:<44} {r['median_s']:>10.4f} {r['min_s']:>9.4f} {r['max_s']:>9.4f} "
                     f"{r['n']:>4} {r['peak_rss_mb']:>12.1f}")
    lines += [
        f"tower step / cache step: {tower['median_s'] / cache['median_s']:.0f}x",
        f"synthetic cache: {args.subjects} subjects x {args.samples} samples x {args.frames} frames "
        f"= {n_frames} vectors of {args.dim} ({n_frames * args.dim * 4 / 2**20:.0f} MiB float32), "
        f"made in {train['make_s']:.1f} s",
        f"full training: {train['median_s']:.1f} s end to end, {train['cpu_s']:.1f} CPU s over all threads "
        f"({train['n_train']} training samples, "
        f"{train['median_s'] / train['steps'] * 1000:.1f} ms/step incl. validation; "
        f"validation macro-F1 {train['val_f1']:.3f}); goal < 60 s: "
        f"{'met' if train['median_s'] < 60 else 'NOT met'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    try:
        rows = {which: child(which, args) if args.in_process else run_child(which, argv) for which in ROWS}
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    print(report(args, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
