"""`autt faces`: OUT/manifest -> OUT/faces (decode, detect, track, crop), one part per shard.

Every done manifest shard is one unit of work; its ok samples go through FaceStage on a
Ray actor that holds MTCNN. Crops are written only with ``faces.store_crops=true``.
"""

from __future__ import annotations

import functools

from jobs.runner import StageRun, run_shards
from pipeline.config import Config
from pipeline.faces.config import FacesConfig
from pipeline.faces.shard import (
    FAILED,
    FacesShard,
    fingerprint_config,
    input_digest,
    legacy_hint,
)
from pipeline.planning import Fingerprint, Plan, StageChanged, plan
from pipeline.workspace import Workspace


def faces_fingerprint(ws: Workspace, shard_id: str, faces: FacesConfig,
                      manifest_marker: dict) -> Fingerprint:
    return Fingerprint(config=fingerprint_config(faces),
                       inputs={"manifest": input_digest(ws, shard_id, manifest_marker)})


def manifest_markers(ws: Workspace) -> dict[str, dict]:
    """The done manifest shards' markers (one listing, one batched read)."""
    markers = ws.markers("manifest")
    if not markers:
        raise FileNotFoundError(f"no ingested samples in {ws.root}: run `autt ingest` first")
    return markers


def faces_fingerprints(ws: Workspace, faces: FacesConfig) -> dict[str, Fingerprint]:
    return {s: faces_fingerprint(ws, s, faces, m) for s, m in manifest_markers(ws).items()}


def wants_gpu(device: str) -> bool:
    return device in ("auto", "cuda")


def plan_faces(ws: Workspace, fps: dict[str, Fingerprint], **kw) -> Plan:
    """``plan`` of the faces table; a refusal names the settings that keep older tables."""
    try:
        return plan(ws, "faces", fps, failure_statuses=FAILED, **kw)
    except StageChanged as err:
        done = kw.get("done") or ws.markers("faces")
        wanted = next(iter(fps.values())).config
        raise StageChanged(f"{err}{legacy_hint(done, wanted)}") from None


def run(cfg: Config, run_id: str) -> StageRun:
    ws = Workspace(cfg.run.out)
    fps = {s: {"faces": fp} for s, fp in faces_fingerprints(ws, cfg.faces).items()}
    todo = plan_faces(ws, {s: f["faces"] for s, f in fps.items()},
                      recompute=cfg.run.recompute, retry_failed=cfg.run.retry_failed)
    factory = functools.partial(FacesShard, cfg.faces)
    return run_shards("faces", ws, factory, todo, fps, run_id, cfg.run,
                      wants_gpu=wants_gpu(cfg.faces.device), primary="faces")
