"""`autt ingest`: manifest (or dataset adapter) -> OUT/manifest/ (one part per shard).

Reads and validates the whole manifest first (manifest-level faults abort here, before any
work), appends new samples as a new batch of fixed shards, then probes each pending shard
as one Ray actor call. Per-sample faults become rows; ``--strict`` makes them abort.
"""

from __future__ import annotations

import functools
import json

import pandas as pd

from jobs.runner import StageRun, run_shards
from pipeline import io
from pipeline.config import Config, config_hash
from pipeline.ingest import batches, manifest
from pipeline.ingest.config import IngestConfig
from pipeline.ingest.stage import IngestStage, fingerprint_config
from pipeline.planning import Fingerprint, plan
from pipeline.workspace import Workspace

CLASSES_FILE = ("manifest", "_classes.json")


def load_rows(cfg: Config, ws: Workspace):
    """Input rows and the class list, validated (raises ManifestError)."""
    ing = cfg.ingest
    stored = _stored_classes(ws)
    classes = ing.classes or stored or ()
    if ing.dataset == "manifest":
        if not ing.manifest:
            raise manifest.ManifestError("no manifest given: pass --manifest FILE "
                                         "(or --dataset NAME --root PATH)")
        raw = manifest.read_manifest(ing.manifest)
        source = ing.manifest
    else:
        raw = scan_dataset(ing)
        source = f"{ing.dataset} dataset at {ing.root}"
    split = manifest.read_split(ing.split) if ing.split else None
    rows, classes = manifest.normalise(
        raw, classes=tuple(classes), split=split, target_subjects=cfg.protocol.target_subjects,
        default_media=ing.media, source=source)
    bad = rows[rows["status"] != "ok"]
    if cfg.run.strict and len(bad):
        r = bad.iloc[0]
        raise manifest.ManifestError(f"--strict: sample {r.sample_id!r} is {r.status}: {r.error}")
    return rows, classes


def scan_dataset(ing: IngestConfig) -> pd.DataFrame:
    """Rows from a dataset adapter, with its options taken from the ingest config."""
    from pipeline.ingest import adapters

    if not ing.root:
        raise manifest.ManifestError(f"--dataset {ing.dataset} needs --root PATH")
    opts: dict = {}
    if ing.dataset == "biovid":
        opts = {"classes": tuple(ing.biovid_codes), "names": ing.classes or ("neutral", "pain")}
        if ing.window:
            opts["window"] = tuple(ing.window)
    elif ing.dataset == "stressid":
        opts = {"labels_path": ing.labels_path, "threshold": ing.stress_threshold,
                "names": ing.classes or ("neutral", "stress")}
    elif ing.dataset == "bah":
        opts = {"segments_path": ing.segments_path, "chunk_frames": ing.chunk_frames,
                "faces_root": ing.faces_root, "names": ing.classes or ("neutral", "ambivalence")}
    elif ing.dataset == "pattern":
        opts = {"pattern": ing.pattern, "classes": ing.classes or None}
        if ing.media in ("video", "frames", "faces"):
            opts["media"] = ing.media
    try:
        return adapters.scan(ing.dataset, io.absolute(ing.root), **opts)
    except (FileNotFoundError, ValueError) as exc:
        raise manifest.ManifestError(f"{ing.dataset} dataset at {ing.root!r}: {exc}") from exc


def _stored_classes(ws: Workspace) -> tuple[str, ...]:
    url = ws.url(*CLASSES_FILE)
    return tuple(json.loads(io.read_text(url))) if io.exists(url) else ()


def run(cfg: Config, run_id: str, prepared: tuple | None = None) -> StageRun:
    """Ingest; ``prepared`` is ``load_rows``'s result when the caller validated already."""
    ws = Workspace(cfg.run.out)
    rows, classes = prepared if prepared is not None else load_rows(cfg, ws)
    conf = fingerprint_config(cfg.ingest, classes)

    def fingerprints() -> dict[str, dict[str, Fingerprint]]:
        return {s: {"manifest": Fingerprint(config=conf, inputs={"plan": digest})}
                for s, digest in batches.shard_digests(ws).items()}

    kw = dict(recompute=cfg.run.recompute, retry_failed=cfg.run.retry_failed,
              failure_statuses=IngestStage.failure_statuses)
    # Refuse a changed class list or probe setting before anything is written.
    plan(ws, "manifest", {s: f["manifest"] for s, f in fingerprints().items()}, **kw)
    counts = batches.assign(ws, rows, classes, cfg.ingest.shard_size,
                            recompute=cfg.run.recompute, run_id=run_id, config_hash=config_hash(conf))
    if tuple(classes) != _stored_classes(ws):
        io.write_text_atomic(ws.url(*CLASSES_FILE), json.dumps(list(classes)))
    fps = fingerprints()
    todo = plan(ws, "manifest", {s: f["manifest"] for s, f in fps.items()}, **kw)
    factory = functools.partial(_make_stage, cfg.ingest, tuple(classes), cfg.run.strict)
    result = run_shards("ingest", ws, factory, todo, fps, run_id, cfg.run, primary="manifest")
    result.extra.update(counts)
    return result


def _make_stage(ingest_cfg, classes: tuple[str, ...], strict: bool, num_threads: int | None):
    return IngestStage(ingest_cfg, classes, num_threads, strict=strict)
