"""`autt bench plan`: what a no-op rerun and `autt status` cost on a large workspace.

In: ``--samples`` (default 100,000), ``--shard-size`` (100), ``--batches`` (10), ``--out``
(a local folder, or a ``memory://`` URL). Out: a synthetic workspace whose ingest plans,
manifest, faces and embeddings markers look exactly like the pipeline's own (built with the
same fingerprint functions; no media, no parts but the plans), then a printed table of
seconds for each planning step of a rerun with nothing to do, and for `autt status`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

import pandas as pd

from jobs import benchinfo


def build(root: str, samples: int, shard_size: int, batches: int, cfg) -> None:
    from jobs.embed import driver_backbone, embed_config
    from jobs.faces import faces_fingerprint
    from pipeline import io, parquet
    from pipeline.embed.shard import table_name
    from pipeline.faces.shard import fingerprint_config
    from pipeline.ingest import batches as batchmod
    from pipeline.ingest.stage import fingerprint_config as ingest_config
    from pipeline.planning import Fingerprint
    from pipeline.workspace import Workspace

    ws = Workspace(root)
    classes = ("neutral", "pain")
    io.write_text_atomic(ws.url("manifest", "_classes.json"), json.dumps(list(classes)))
    per_batch = samples // batches
    bb = driver_backbone(cfg.embed)
    emb_conf = embed_config(cfg, cfg.faces, bb)
    man_conf = ingest_config(cfg.ingest, classes)
    faces_conf = fingerprint_config(cfg.faces)
    for b in range(batches):
        ids = [f"s{b:02d}-{i:06d}" for i in range(per_batch)]
        n = per_batch
        df = pd.DataFrame({
            "sample_id": ids, "video_id": ids, "subject_id": [f"p{i % 87:02d}" for i in range(n)],
            "label": [classes[i % 2] for i in range(n)], "role": ["source"] * n,
            "path": [f"/data/{s}.mp4" for s in ids], "media": ["video"] * n, "start": [None] * n,
            "end": [None] * n, "time_unit": ["s"] * n, "batch": [b] * n,
            "shard_id": [f"b{b:04d}-s{i // shard_size:04d}" for i in range(n)],
            "status": ["ok"] * n, "error": [None] * n})
        # as `autt ingest` writes it
        batchmod._write_plan(ws, b, df, classes, {"run_id": "bench", "config_hash": "bench"})
        df = parquet.read(ws.url("manifest", "_plan", f"b{b:04d}.parquet")).to_pandas()
        for shard, rows in df.groupby("shard_id"):
            digest = batchmod.rows_digest(rows.reset_index(drop=True))
            media = f"m{digest[:20]}"
            marker = _marker("manifest", shard, Fingerprint(man_conf, {"plan": digest}), len(rows),
                             view_digests={"media": media})
            ws.commit(shard, {"manifest": marker}, {})
            fp = faces_fingerprint(ws, shard, cfg.faces, marker)
            assert fp.config == faces_conf
            ws.commit(shard, {"faces": _marker("faces", shard, fp, len(rows) * 75)}, {})
            emb = Fingerprint(emb_conf, {"faces": f"f{shard}"}, numerics=None)
            table = table_name(bb.backbone_id)
            ws.commit(shard, {table: _marker(table, shard, emb, len(rows) * 75,
                                             numerics="cpu/fp32")}, {})
    # the faces markers' output digests are what the embeddings fingerprint on
    faces_done = ws.markers("faces")
    for shard, m in faces_done.items():
        m["output_digest"] = f"f{shard}"
        ws.commit(shard, {"faces": m}, {})


def _marker(table: str, shard: str, fp, rows: int, **extra) -> dict:
    return {"table": table, "shard_id": shard, "stage": table, "mode": "full",
            "fingerprint": fp.value, "config_hash": fp.config_hash, "config": fp.config,
            "inputs": fp.inputs, "code_version": fp.code_version, "run_id": "bench",
            "rows_in": rows, "processed": rows, "seconds": {}, "failure_statuses": [],
            "finished_at": "2026-01-01T00:00:00+00:00", "rows": rows,
            "status_counts": {"ok": rows}, "output_digest": f"d{shard}",
            "files": {"data": f"{table}/part-{shard}.a0.parquet",
                      "errors": f"errors/{table}/part-{shard}.a0.parquet",
                      "stats": f"stats/{table}/part-{shard}.a0.parquet"}, "attempt": "a0", **extra}


def measure(root: str, cfg) -> list[tuple[str, float, str]]:
    from jobs import status
    from jobs.embed import driver_backbone, embed_config
    from jobs.faces import faces_fingerprints
    from pipeline.embed.shard import table_name
    from pipeline.faces.shard import FAILED
    from pipeline.ingest import batches as batchmod
    from pipeline.planning import Fingerprint, plan
    from pipeline.workspace import Workspace

    ws = Workspace(root)
    rows = []

    def timed(name, fn):
        t = time.perf_counter()
        result = fn()
        rows.append((name, time.perf_counter() - t, result))
        return result

    from pipeline.ingest.manifest import INPUT_COLUMNS

    rows_in = batchmod.read_plans(ws)[list(INPUT_COLUMNS)]  # the same manifest, read again
    counts = timed("ingest: compare the manifest with the plans",
                   lambda: batchmod.assign(ws, rows_in, ("neutral", "pain"), 100, recompute=False,
                                           run_id="bench", config_hash="bench"))
    rows[-1] = (*rows[-1][:2], f"{counts['known']} known, {counts['new']} new")
    digests = timed("ingest: shard digests (one read per batch plan)",
                    lambda: batchmod.shard_digests(ws))
    rows[-1] = (*rows[-1][:2], f"{len(digests)} shards")
    fps = timed("faces: fingerprints from manifest markers", lambda: faces_fingerprints(ws, cfg.faces))
    rows[-1] = (*rows[-1][:2], f"{len(fps)} shards")
    faces_done = timed("faces: markers (one listing, batched read)", lambda: ws.markers("faces"))
    rows[-1] = (*rows[-1][:2], f"{len(faces_done)} markers")
    p = timed("faces: plan", lambda: plan(ws, "faces", fps, recompute=False, retry_failed=False,
                                          failure_statuses=FAILED, done=faces_done))
    rows[-1] = (*rows[-1][:2], f"{len(p.todo)} to do")
    bb = driver_backbone(cfg.embed)
    table = table_name(bb.backbone_id)
    conf = embed_config(cfg, cfg.faces, bb)
    emb_fps = {s: Fingerprint(conf, {"faces": m["output_digest"]}) for s, m in faces_done.items()}
    p = timed("embeddings: markers + plan",
              lambda: plan(ws, table, emb_fps, recompute=False, retry_failed=False,
                           failure_statuses=frozenset(), incremental=True))
    rows[-1] = (*rows[-1][:2], f"{len(p.todo)} to do")
    timed("autt status (summarise)", lambda: status.summarise(root))
    rows[-1] = (*rows[-1][:2], "")
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="autt bench plan", description=__doc__)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--out", default=None, help="workspace to build (default: a temporary folder)")
    args = ap.parse_args(argv)
    from pipeline.config import load_config

    cfg = load_config(None, ["embed.model=autt-tiny", "embed.weights=random"])
    root = args.out or tempfile.mkdtemp(prefix="autt-bench-plan-")
    try:
        t = time.perf_counter()
        build(root, args.samples, args.shard_size, args.batches, cfg)
        print(f"# autt bench plan: {args.samples} samples, {args.samples // args.shard_size} shards, "
              f"{args.batches} batches; built in {time.perf_counter() - t:.1f}s")
        print(f"# machine: {benchinfo.describe()}")
        total = 0.0
        print(f"{'step':<52} {'seconds':>8}  result")
        for name, seconds, result in measure(root, cfg):
            total += seconds
            print(f"{name:<52} {seconds:>8.3f}  {result}")
        print(f"{'total (no-op rerun planning + status)':<52} {total:>8.3f}")
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0



