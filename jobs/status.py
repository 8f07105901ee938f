"""`autt status --out OUT`: per table, units and samples done, pending, rows failed, and
the units whose last attempt failed.

In: a workspace root. Out: a table on stdout, read only from done markers, ingest batch
plans and statistics (no data part is opened), and who holds the workspace lock, if anyone
(a reader takes no lock).
"""

from __future__ import annotations

from collections import Counter

from pipeline import lock
from pipeline.ingest import batches
from pipeline.workspace import Workspace

SHARDED = ("manifest", "faces")  # tables with one unit per ingest shard (and embeddings/<id>)


def summarise(root: str) -> list[dict]:
    ws = Workspace(root)
    planned = sorted(batches.shard_digests(ws))  # plan footers only
    rows = []
    for table in ["manifest"] + [t for t in ws.tables() if t != "manifest"]:
        markers = ws.markers(table)
        counts: Counter = Counter()
        for m in markers.values():
            counts.update(m.get("status_counts", {}))
        # Tables of ingest shards count the shards not done; other units (models, the
        # predictions of a model...) are planned per run and report what they hold.
        sharded = table in SHARDED or table.startswith("embeddings/")
        missing = [s for s in planned if s not in markers] if sharded else None
        rows.append({
            "table": table, "shards_done": len(markers),
            "shards_missing": None if missing is None else len(missing),
            "rows": sum(m.get("rows", 0) for m in markers.values()),
            "samples_in": sum(m.get("rows_in", 0) for m in markers.values()),
            "status": dict(sorted(counts.items())),
            "failed": sum(n for s, n in counts.items() if s in _failed(markers)),
        })
    return rows


def _failed(markers: dict) -> set[str]:
    out: set[str] = set()
    for m in markers.values():
        out.update(m.get("failure_statuses", []))
    return out


def main(root: str) -> int:
    held = lock.holder(Workspace(root).root)
    if held and lock.is_stale(held):
        print(f"{root}: locked by {lock.describe(held)}, which is no longer running (a stale "
              f"lock, left by a killed command): `autt unlock --out {root}` clears it")
    elif held is not None:
        print(f"{root}: in use by {lock.describe(held)}")
    rows = summarise(root)
    if not rows or (rows[0]["shards_done"] == 0 and rows[0]["shards_missing"] == 0):
        print(f"{root}: no ingested samples yet (run `autt ingest --out {root} ...`)")
        return 0
    # "rows failed": failure rows inside committed units; units whose last attempt failed
    # (nothing committed) are listed below the table
    print(f"{'table':<38} {'units done':>11} {'missing':>8} {'samples':>8} {'rows':>8} "
          f"{'rows failed':>11}  status counts")
    for r in rows:
        shown = ", ".join(f"{k} {v}" for k, v in r["status"].items())
        missing = "-" if r["shards_missing"] is None else r["shards_missing"]
        print(f"{r['table']:<38} {r['shards_done']:>11} {missing:>8} "
              f"{r['samples_in']:>8} {r['rows']:>8} {r['failed']:>11}  {shown}")
    failures = failed_units(root)
    if failures:
        print(f"\nunits whose last attempt failed ({len(failures)}; rerun the command to retry them):")
        for f in failures:
            print(f"  {f['table']:<14} {f['unit']}: {f['error']} (run {f['run_id']}, {f['at']})")
    return 0


def failed_units(root: str) -> list[dict]:
    """Units not committed whose last attempt failed, with their error (from the notes the
    runner leaves beside each table; a commit removes them)."""
    from schemas import TABLES

    ws = Workspace(root)
    out = []
    for table in sorted(set(ws.tables()) | set(TABLES)):
        for unit, info in ws.failures(table).items():
            out.append({"table": table, "unit": unit, **{k: info.get(k) for k in ("error", "run_id", "at")}})
    return out
