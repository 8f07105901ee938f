"""`autt embed [--fused]`: face crops -> OUT/embeddings/<backbone id>/ (+ text features).

Standalone: reads done faces shards (crops from stored PNGs or recomputed from the stored
boxes). Fused (`autt run`, `autt demo`, `autt embed --fused`): faces and embeddings in one
pass per shard, crops never written. Either way the AU and class prompts are encoded once,
in float32, into OUT/text_features/<backbone id>/.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

from jobs.faces import faces_fingerprint, manifest_shards, wants_gpu
from jobs.runner import StageRun, run_shards
from pipeline import config as cfgmod
from pipeline import io, parquet
from pipeline.config import Config
from pipeline.embed.backbone import Backbone, load_backbone
from pipeline.embed.config import EmbedConfig
from pipeline.embed.shard import EmbedShard, FusedShard, table_name
from pipeline.embed.text import encode_text_features
from pipeline.faces.config import FacesConfig
from pipeline.faces.shard import CROP_KEYS, FAILED
from pipeline.shards import CODE_VERSION, Fingerprint, Plan, StageChanged, plan
from pipeline.workspace import Workspace
from schemas import TEXT_FEATURES_VERSION, text_features_schema

EMBED_RUNTIME_KEYS = ("batch_size", "device", "cache_dir", "weights")  # weights: by digest


def embed_config(cfg: Config, faces: FacesConfig, bb: Backbone) -> dict:
    """What decides an embedding: the backbone's weights (by digest, not by path), how it
    runs, and the crop settings of the faces it reads."""
    embed = {k: v for k, v in cfgmod.to_dict(cfg.embed).items() if k not in EMBED_RUNTIME_KEYS}
    return {"embed": {**embed, "weights_digest": bb.weights_digest},
            "crop": {k: getattr(faces, k) for k in CROP_KEYS}}


def faces_config_of_markers(ws: Workspace, markers: dict[str, dict]) -> FacesConfig:
    """The face settings the done faces shards were made with (they must agree)."""
    seen = {json.dumps(m["config"]["faces"], sort_keys=True) for m in markers.values()}
    if not seen:
        raise FileNotFoundError(f"no face shards in {ws.root}: run `autt faces` first")
    if len(seen) > 1:
        raise StageChanged(f"faces: the done shards in {ws.root} were made with {len(seen)} "
                           "different face settings; redo them with `autt faces --recompute`")
    return cfgmod.build(FacesConfig, json.loads(seen.pop()), "faces")


def write_text_features(ws: Workspace, cfg: Config, bb: Backbone, run_id: str) -> str:
    classes = json.loads(io.read_text(ws.url("manifest", "_classes.json")))
    key = hashlib.sha256(json.dumps([bb.backbone_id, bb.weights_digest, classes,
                                     cfgmod.to_dict(cfg.prompts)]).encode()).hexdigest()[:16]
    url = ws.url("text_features", bb.backbone_id, f"part-{key}.parquet")
    if not io.exists(url):
        cols = encode_text_features(bb, cfg.prompts, classes)
        table = parquet.to_table(cols, text_features_schema(bb.embed_dim))
        meta = {"run_id": run_id, "backbone_id": bb.backbone_id, "weights_digest": bb.weights_digest,
                "classes": json.dumps(classes), "prompts": json.dumps(cfgmod.to_dict(cfg.prompts)),
                "schema_version": str(TEXT_FEATURES_VERSION), "config_hash": cfgmod.config_hash(cfg.prompts),
                "code_version": CODE_VERSION}
        parquet.write(url, parquet.with_run_metadata(table, **meta))
    return url




@functools.lru_cache(maxsize=2)
def driver_backbone(embed: EmbedConfig) -> Backbone:
    """The backbone on the driver (text features, ids, digests), loaded once per config;
    called before any stage runs so that a bad model or weights setting fails first. Always
    on the CPU: ``embed.device`` is for the workers (a GPU cluster's head may have none)."""
    return load_backbone(dataclasses.replace(embed, device="cpu"))


def _setup(cfg: Config, run_id: str) -> tuple[Workspace, Backbone, str]:
    ws = Workspace(cfg.run.out)
    bb = driver_backbone(cfg.embed)
    write_text_features(ws, cfg, bb, run_id)
    return ws, bb, table_name(bb.backbone_id)


def run(cfg: Config, run_id: str) -> StageRun:
    """Standalone: embed the crops of the done faces shards, as those shards made them."""
    ws, bb, table = _setup(cfg, run_id)
    faces_done = ws.markers("faces")
    faces_cfg = faces_config_of_markers(ws, faces_done)  # crops as the faces table made them
    conf = embed_config(cfg, faces_cfg, bb)
    fps = {s: {table: Fingerprint(config=conf, inputs={"faces": m["output_digest"]})}
           for s, m in faces_done.items()}
    todo = plan(ws, table, {s: f[table] for s, f in fps.items()}, recompute=cfg.run.recompute,
                retry_failed=cfg.run.retry_failed, failure_statuses=frozenset({"embed_error"}))
    run_cfg = dataclasses.replace(cfg, faces=faces_cfg)
    factory = functools.partial(_make, EmbedShard, run_cfg)
    return run_shards("embed", ws, factory, todo, fps, run_id, cfg.run,
                      wants_gpu=wants_gpu(cfg.embed.device), primary=table)


def run_fused(cfg: Config, run_id: str) -> list[StageRun]:
    """Faces and embeddings in one pass for every shard where either table needs work."""
    ws, bb, table = _setup(cfg, run_id)
    shards = manifest_shards(ws)
    kw = dict(recompute=cfg.run.recompute, retry_failed=cfg.run.retry_failed)
    faces_fps = {s: faces_fingerprint(ws, s, cfg.faces) for s in shards}
    faces_done, emb_done = ws.markers("faces"), ws.markers(table)
    faces_plan = plan(ws, "faces", faces_fps, failure_statuses=FAILED, done=faces_done, **kw)
    redo = set(faces_plan.todo)
    conf = embed_config(cfg, cfg.faces, bb)
    # Shards whose faces are (re)made now fingerprint their embeddings on those new faces.
    emb_fps = {s: Fingerprint(config=conf, inputs={"faces": "@faces" if s in redo else
                                                   faces_done[s]["output_digest"]})
               for s in shards}
    emb_plan = plan(ws, table, emb_fps, failure_statuses=frozenset(), config_only=frozenset(redo),
                    done=emb_done, **kw)
    # A shard runs whole when either table needs it whole (its faces are recomputed
    # identically); a faces retry stays a retry (failed samples only) when its embeddings
    # exist with the same settings.
    emb_whole = {s for s in shards
                 if s not in emb_done or emb_done[s]["config_hash"] != emb_fps[s].config_hash}
    todo = sorted(redo | set(emb_plan.todo))
    retry = [s for s in faces_plan.retry if s not in emb_whole]
    fused = Plan(run=[s for s in todo if s not in retry], retry=retry,
                 skip=[s for s in shards if s not in todo])
    fps = {s: {"faces": faces_fps[s], table: emb_fps[s]} for s in shards}
    factory = functools.partial(_make, FusedShard, cfg)
    return [run_shards("faces+embed", ws, factory, fused, fps, run_id, cfg.run,
                       wants_gpu=wants_gpu(cfg.faces.device) or wants_gpu(cfg.embed.device),
                       primary="faces")]


def _make(cls, cfg: Config, num_threads: int | None):
    return cls(cfg.embed, cfg.faces, num_threads)
