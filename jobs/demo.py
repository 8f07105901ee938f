"""`autt demo`: generate the bundled demo dataset, then run every stage on it.

The demo data are made by the project itself (no downloads): the real face photo shipped
with scikit-image, animated per subject and label, written as h264 videos with a manifest
and a split file under ``OUT/demo-data/``. The demo runs a tiny random-init CLIP
(``autt-tiny``): no real CLIP weights are available offline. Point ``embed.model`` and
``embed.weights`` at real ones to run the same job for real.
"""

from __future__ import annotations

import dataclasses
import json
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

# Bump when the renderer draws other frames for the same ``demo`` settings: demo data made
# by another version are then refused instead of silently reused.
DEMO_DATA_VERSION = 2  # 2: one shared studio, 14 subjects (43cbb66)
RECORD = "demo.json"  # under OUT/demo-data: the settings and version that made the data


def _record(cfg: Config) -> dict:
    return {"version": DEMO_DATA_VERSION, "demo": dataclasses.asdict(cfg.demo)}


def prepare(cfg: Config) -> Config:
    """Write the demo data (once) and point the ingest settings at it."""
    from jobs.pipeline_job import UserError
    from pipeline.demo import make_demo

    if not io.is_local(cfg.run.out):
        raise UserError(f"autt demo writes its videos locally; --out must be a local path, "
                        f"got {cfg.run.out!r}")
    folder = io.join(io.absolute(cfg.run.out), "demo-data")
    marker, record = io.join(folder, "manifest.csv"), io.join(folder, RECORD)
    want = json.loads(json.dumps(_record(cfg)))  # as read back: tuples become lists
    if not io.exists(marker):
        print(f"[demo] generating demo videos in {folder} ...", file=sys.stderr, flush=True)
        # the record first: the manifest, written last, marks the data whole
        io.write_text_atomic(record, json.dumps(want, indent=1, sort_keys=True) + "\n")
        info = make_demo(folder, cfg.demo)
    else:
        have = json.loads(io.read_text(record)) if io.exists(record) else None
        if have != want:
            if have is None or have.get("version") != DEMO_DATA_VERSION:
                why = "by another version of autt demo"
            else:
                diff = [f"{k} {have['demo'].get(k)!r} -> {v!r}" for k, v in
                        want["demo"].items() if have["demo"].get(k) != v]
                why = "with other demo settings (" + ", ".join(diff) + ")"
            raise UserError(f"{folder} was made {why}; the demo data of a workspace are "
                            f"never regenerated: use another --out, or the same demo.* settings")
        info = {"manifest": marker, "split": io.join(folder, "split.csv"),
                "classes": list(cfg.demo.classes)}
    ingest = dataclasses.replace(cfg.ingest, manifest=info["manifest"], split=info["split"],
                                 classes=tuple(info["classes"]))
    return dataclasses.replace(cfg, ingest=ingest)
