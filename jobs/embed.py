"""`autt embed [--fused]`: face crops -> OUT/embeddings/<backbone id>/ (+ text features).

Standalone: reads committed faces shards (crops from stored PNGs or recomputed from the
stored boxes). Fused (`autt run`, `autt demo`, `autt embed --fused`): faces and embeddings
in one pass for shards whose faces need work; shards whose faces are done and only the
embeddings need work (a new backbone, an interrupted pass) are embedded from the stored
boxes, without running MTCNN again. The AU and class prompts are encoded once per backbone,
in float32, as the one-unit table OUT/text_features/<backbone id>/. Everything is planned
(and may refuse) before anything is written.
"""

from __future__ import annotations

import dataclasses
import functools
import json

from jobs.faces import faces_fingerprints, plan_faces, wants_gpu
from jobs.runner import StageRun, node_id, run_shards
from pipeline import config as cfgmod
from pipeline import io
from pipeline.config import Config
from pipeline.embed.backbone import Backbone, load_backbone
from pipeline.embed.config import EmbedConfig
from pipeline.embed.shard import EmbedShard, FusedShard, table_name
from pipeline.embed.text import TEXT_UNIT, TextFeaturesStage, text_table
from pipeline.faces.config import FacesConfig
from pipeline.faces.shard import config_of_fingerprint, crop_fingerprint
from pipeline.planning import Fingerprint, Plan, StageChanged, plan
from pipeline.shards import execute
from pipeline.workspace import Workspace

# Settings that change no vector: speed, where weights are found (their digest counts
# instead), and the numerics that are recorded per unit instead (device, precision).
EMBED_RUNTIME_KEYS = ("batch_size", "device", "cache_dir", "weights", "precision", "mixed_numerics")


def embed_config(cfg: Config, faces: FacesConfig, bb: Backbone) -> dict:
    """What decides an embedding: the backbone's weights (by digest, not by path), how it
    runs, and the crop settings of the faces it reads."""
    embed = {k: v for k, v in cfgmod.to_dict(cfg.embed).items() if k not in EMBED_RUNTIME_KEYS}
    return {"embed": {**embed, "weights_digest": bb.weights_digest},
            "crop": crop_fingerprint(faces)}


def faces_config_of_markers(ws: Workspace, markers: dict[str, dict]) -> FacesConfig:
    """The face settings the done faces shards were made with (they must agree)."""
    seen = {json.dumps(m["config"]["faces"], sort_keys=True) for m in markers.values()}
    if not seen:
        raise FileNotFoundError(f"no face shards in {ws.root}: run `autt faces` first")
    if len(seen) > 1:
        raise StageChanged(f"faces: the done shards in {ws.root} were made with {len(seen)} "
                           "different face settings; redo them with `autt faces --recompute`")
    return config_of_fingerprint(json.loads(seen.pop()))


def numerics_in(done: dict[str, dict], cfg: EmbedConfig) -> tuple[str, ...] | None:
    """The numerics a table's done units hold (None when mixing is allowed or none exist)."""
    seen = tuple(sorted({m["numerics"] for m in done.values() if "numerics" in m}))
    return None if cfg.mixed_numerics or not seen else seen


@functools.lru_cache(maxsize=2)
def driver_backbone(embed: EmbedConfig) -> Backbone:
    """The backbone on the driver (text features, ids, digests), loaded once per config;
    called before any stage runs so that a bad model or weights setting fails first. Always
    on the CPU: ``embed.device`` is for the workers (a GPU cluster's head may have none)."""
    return load_backbone(dataclasses.replace(embed, device="cpu"))


class TextFeatures:
    """The text features unit of one backbone: planned first, written once planning of
    every stage has passed."""

    def __init__(self, ws: Workspace, cfg: Config, bb: Backbone):
        self.ws, self.cfg, self.bb = ws, cfg, bb
        self.classes = json.loads(io.read_text(ws.url("manifest", "_classes.json")))
        self.table = text_table(bb.backbone_id)
        self.fp = Fingerprint(config={"prompts": cfgmod.to_dict(cfg.prompts),
                                      "classes": list(self.classes)},
                              inputs={"weights": bb.weights_digest})
        self.plan = plan(ws, self.table, {TEXT_UNIT: self.fp}, recompute=cfg.run.recompute,
                         retry_failed=False, failure_statuses=frozenset())

    def write(self, run_id: str) -> None:
        if self.plan.todo:
            stage = TextFeaturesStage(self.bb, self.cfg.prompts, self.classes)
            execute(self.ws, stage, TEXT_UNIT, {self.table: self.fp}, "full", run_id,
                    node_id=node_id())  # the driver's node


def run(cfg: Config, run_id: str) -> StageRun:
    """Standalone: embed the crops of the committed faces shards, as those shards made them."""
    ws = Workspace(cfg.run.out)
    bb = driver_backbone(cfg.embed)
    table = table_name(bb.backbone_id)
    faces_done = ws.markers("faces")
    faces_cfg = faces_config_of_markers(ws, faces_done)  # crops as the faces table made them
    conf = embed_config(cfg, faces_cfg, bb)
    emb_done = ws.markers(table)
    numerics = numerics_in(emb_done, cfg.embed)
    fps = {s: {table: Fingerprint(config=conf, inputs={"faces": m["output_digest"]},
                                  numerics=numerics)}
           for s, m in faces_done.items()}
    todo = plan(ws, table, {s: f[table] for s, f in fps.items()}, recompute=cfg.run.recompute,
                retry_failed=cfg.run.retry_failed, failure_statuses=frozenset({"embed_error"}),
                done=emb_done, incremental=True)
    text = TextFeatures(ws, cfg, bb)
    text.write(run_id)
    run_cfg = dataclasses.replace(cfg, faces=faces_cfg)
    factory = functools.partial(_make, EmbedShard, run_cfg)
    return run_shards("embed", ws, factory, todo, fps, run_id, cfg.run,
                      wants_gpu=wants_gpu(cfg.embed.device), primary=table)


def run_fused(cfg: Config, run_id: str) -> list[StageRun]:
    """Faces and embeddings in one pass where the faces need work; embeddings alone, from
    the stored boxes, where only they do."""
    ws = Workspace(cfg.run.out)
    bb = driver_backbone(cfg.embed)
    table = table_name(bb.backbone_id)
    kw = dict(recompute=cfg.run.recompute, retry_failed=cfg.run.retry_failed)
    faces_fps = faces_fingerprints(ws, cfg.faces)
    shards = sorted(faces_fps)
    faces_done, emb_done = ws.markers("faces"), ws.markers(table)
    faces_plan = plan_faces(ws, faces_fps, done=faces_done, **kw)
    redo = set(faces_plan.todo)
    conf = embed_config(cfg, cfg.faces, bb)
    numerics = numerics_in(emb_done, cfg.embed)
    # Shards whose faces are (re)made now fingerprint their embeddings on those new faces.
    emb_fps = {s: Fingerprint(config=conf, numerics=numerics,
                              inputs={"faces": "@faces" if s in redo else faces_done[s]["output_digest"]})
               for s in shards}
    emb_plan = plan(ws, table, emb_fps, failure_statuses=frozenset({"embed_error"}),
                    config_only=frozenset(redo), done=emb_done, incremental=True, **kw)
    text = TextFeatures(ws, cfg, bb)  # may refuse too: before anything is written
    # Faces whole when they are new or changed, or when the embeddings must be made whole
    # (other embed settings); else a retry of the samples that failed or lack embeddings.
    emb_config_changed = {s for s, m in emb_done.items() if m["config_hash"] != emb_fps[s].config_hash}
    fused_whole = set(faces_plan.run) | (set(faces_plan.retry) & emb_config_changed)
    fused = Plan(run=sorted(fused_whole), retry=sorted(redo - fused_whole))
    embed_only = Plan(run=sorted(set(emb_plan.run) - redo), retry=sorted(set(emb_plan.retry) - redo),
                      delta=sorted(set(emb_plan.delta) - redo),
                      skip=[s for s in shards if s not in redo and s not in emb_plan.todo])
    fused.skip = [s for s in shards if s not in redo]
    text.write(run_id)
    fused_fps = {s: {"faces": faces_fps[s], table: emb_fps[s]} for s in shards}
    gpu = wants_gpu(cfg.faces.device) or wants_gpu(cfg.embed.device)
    results = [run_shards("faces+embed", ws, functools.partial(_make, FusedShard, cfg), fused,
                          fused_fps, run_id, cfg.run, wants_gpu=gpu, primary="faces")]
    if embed_only.todo and not results[0].failed:
        faces_cfg = faces_config_of_markers(ws, {s: faces_done[s] for s in embed_only.todo})
        emb_only_fps = {s: {table: emb_fps[s]} for s in shards}
        factory = functools.partial(_make, EmbedShard, dataclasses.replace(cfg, faces=faces_cfg))
        results.append(run_shards("embed", ws, factory, embed_only, emb_only_fps, run_id, cfg.run,
                                  wants_gpu=wants_gpu(cfg.embed.device), primary=table))
    return results


def _make(cls, cfg: Config, num_threads: int | None):
    return cls(cfg.embed, cfg.faces, num_threads)


