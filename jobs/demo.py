"""`autt demo`: generate the bundled demo dataset, then run every stage on it.

The demo data are made by the project itself (no downloads): the real face photo shipped
with scikit-image, animated per subject and label, written as h264 videos with a manifest
and a split file under ``OUT/demo-data/``. The demo runs a tiny random-init CLIP
(``autt-tiny``): no real CLIP weights are available offline. Point ``embed.model`` and
``embed.weights`` at real ones to run the same job for real.
"""

from __future__ import annotations

import dataclasses
import sys

from pipeline import io
from pipeline.config import Config

DEMO_DEFAULTS = (
    "run.out=autt-demo",
    "embed.model=autt-tiny",
    "embed.weights=random",
    "embed.batch_size=64",
    "ingest.shard_size=4",
    # 80 training clips (10 subjects x 8 videos; 2 more validate) make 10 AdamW steps per
    # epoch: 100 epochs are 1,000 steps (BioVid's 10 epochs are 3,100). At 10 the head
    # leaves its initial loss plateau only sometimes (target accuracy 0.5-0.75 measured).
    "train.epochs=100",
)


def prepare(cfg: Config) -> Config:
    """Write the demo data (once) and point the ingest settings at it."""
    from pipeline.demo import make_demo

    if not io.is_local(cfg.run.out):
        raise ValueError(f"autt demo writes its videos locally; --out must be a local path, "
                         f"got {cfg.run.out!r}")
    folder = io.join(io.absolute(cfg.run.out), "demo-data")
    marker = io.join(folder, "manifest.csv")
    if not io.exists(marker):
        print(f"[demo] generating demo videos in {folder} ...", file=sys.stderr, flush=True)
        info = make_demo(folder, cfg.demo)
    else:
        info = {"manifest": marker, "split": io.join(folder, "split.csv"),
                "classes": list(cfg.demo.classes)}
    ingest = dataclasses.replace(cfg.ingest, manifest=info["manifest"], split=info["split"],
                                 classes=tuple(info["classes"]))
    return dataclasses.replace(cfg, ingest=ingest)
