"""`autt embed [--fused]`: face crops -> OUT/embeddings/<backbone id>/ (+ text features).

Standalone: reads done faces shards (crops from stored PNGs or recomputed from the stored
boxes). Fused (`autt run`, `autt demo`, `autt embed --fused`): faces and embeddings in one
pass per shard, crops never written. Either way the AU and class prompts are encoded once,
in float32, into OUT/text_features/<backbone id>/.
"""

from __future__ import annotations

import functools
import hashlib
import json

from jobs.faces import faces_fingerprint, manifest_shards, wants_gpu
from jobs.runner import StageRun, run_shards
from pipeline import config as cfgmod
from pipeline import io, parquet
from pipeline.config import Config
from pipeline.embed.backbone import Backbone, load_backbone
from pipeline.embed.shard import EmbedShard, FusedShard, table_name
from pipeline.embed.text import encode_text_features
from pipeline.faces.shard import FAILED, input_digest
from pipeline.shards import CODE_VERSION, Fingerprint, Plan, plan
from pipeline.workspace import Workspace
from schemas import text_features_schema


def embed_fingerprint(ws: Workspace, shard_id: str, cfg: Config, bb: Backbone) -> Fingerprint:
    # Faces output is a function of (manifest input, faces config), so the embeddings depend
    # on exactly these: the same fingerprint whether they came from the fused pass or not.
    return Fingerprint(
        config={"embed": cfgmod.to_dict(cfg.embed), "faces": cfgmod.to_dict(cfg.faces),
                "weights_digest": bb.weights_digest},
        inputs={"manifest": input_digest(ws, shard_id)})


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
                "schema_version": "1", "config_hash": cfgmod.config_hash(cfg.prompts),
                "code_version": CODE_VERSION}
        parquet.write(url, parquet.with_run_metadata(table, **meta))
    return url




def _setup(cfg: Config, run_id: str) -> tuple[Workspace, Backbone, str]:
    ws = Workspace(cfg.run.out)
    bb = load_backbone(cfg.embed)
    write_text_features(ws, cfg, bb, run_id)
    return ws, bb, table_name(bb.backbone_id)


def run(cfg: Config, run_id: str) -> StageRun:
    ws, bb, table = _setup(cfg, run_id)
    shards = sorted(ws.markers("faces"))
    if not shards:
        raise FileNotFoundError(f"no face shards in {ws.root}: run `autt faces` first")
    fps = {s: {table: embed_fingerprint(ws, s, cfg, bb)} for s in shards}
    todo = plan(ws, table, {s: f[table] for s, f in fps.items()}, recompute=cfg.run.recompute,
                retry_failed=False, failure_statuses=frozenset())
    factory = functools.partial(_make, EmbedShard, cfg)
    return run_shards("embed", ws, factory, todo, fps, run_id, cfg.run,
                      wants_gpu=wants_gpu(cfg.embed.device), primary=table)


def run_fused(cfg: Config, run_id: str) -> list[StageRun]:
    ws, bb, table = _setup(cfg, run_id)
    shards = manifest_shards(ws)
    fps = {s: {"faces": faces_fingerprint(ws, s, cfg.faces),
               table: embed_fingerprint(ws, s, cfg, bb)} for s in shards}
    kw = dict(recompute=cfg.run.recompute, retry_failed=cfg.run.retry_failed)
    faces_plan = plan(ws, "faces", {s: f["faces"] for s, f in fps.items()},
                      failure_statuses=FAILED, **kw)
    emb_plan = plan(ws, table, {s: f[table] for s, f in fps.items()},
                    failure_statuses=frozenset(), **kw)
    # A shard runs whole when either table needs it (its faces are recomputed identically).
    todo = sorted(set(faces_plan.todo) | set(emb_plan.todo))
    fused = Plan(run=todo, skip=[s for s in shards if s not in todo])
    factory = functools.partial(_make, FusedShard, cfg)
    return [run_shards("faces+embed", ws, factory, fused, fps, run_id, cfg.run,
                       wants_gpu=wants_gpu(cfg.faces.device) or wants_gpu(cfg.embed.device),
                       primary="faces")]


def _make(cls, cfg: Config, num_threads: int | None):
    return cls(cfg.embed, cfg.faces, num_threads)
