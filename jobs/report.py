"""`autt report --out OUT`: committed predictions -> OUT/results/ tables and OUT/report/.

In: the workspace's committed manifest (labels are joined here and only here),
predictions and adaptation rows (one schema), AU activations, stage statistics and text
features. Out: the results tables
(Parquet, explicit schemas, lineage in their metadata) in OUT/results/, and a static
OUT/report/index.html with its PNGs and the same tables beside it, which opens from disk
with no server. The report is rebuilt whole on every call (it is derived, and cheap): it is
built in a local temporary folder and each file is then written atomically to OUT.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pandas as pd

import pipeline
from pipeline import io
from pipeline.config import Config, config_hash
from pipeline.model import data
from pipeline.workspace import Workspace


class NothingToReport(Exception):
    """No committed predictions yet."""


def run(cfg: Config, run_id: str) -> str:
    """Build the report; returns the URL of its index.html."""
    from pipeline.results.report import ReportConfig, make_report

    ws = Workspace(cfg.run.out)
    if not ws.markers("predictions"):
        raise NothingToReport(f"no predictions in {ws.root} yet: run `autt train` first")
    manifest = ws.read_table("manifest").to_pandas()
    predictions = ws.read_table("predictions").to_pandas()
    if ws.markers("adaptation"):  # the same schema: every step of every adaptation unit
        predictions = pd.concat([predictions, ws.read_table("adaptation").to_pandas()], ignore_index=True)
    classes = json.loads(io.read_text(ws.url("manifest", "_classes.json")))
    backbones = sorted(set(predictions["backbone_id"]))
    models = ws.read_table("models").to_pandas() if ws.markers("models") else pd.DataFrame()
    digests = sorted(set(models.get("weights_digest", pd.Series(dtype=str)).dropna()))
    lineage = {"run_id": run_id, "config_hash": config_hash(cfg), "code_version": pipeline.__version__,
               "backbone_id": ",".join(backbones), "weights_digest": ",".join(digests) or None,
               "manifest_digest": data.digest_of(sorted((u, m["output_digest"])
                                                        for u, m in ws.markers("manifest").items()))}
    stats = [ws.read_side_table("stats", t, _stats_schema()) for t in ws.tables()]
    stage_stats = pd.concat([s.to_pandas() for s in stats if s.num_rows], ignore_index=True)
    acts = ws.read_table("au_activations").to_pandas() if ws.markers("au_activations") else None
    au_names = list(data.read_text_features(ws, backbones[0]).au_names) if backbones else None
    local = tempfile.mkdtemp(prefix="autt-report-")
    try:
        make_report(local, manifest, predictions, classes, lineage, stage_stats=stage_stats,
                    au_activations=acts, au_names=au_names,
                    cfg=ReportConfig(window_len=cfg.protocol.window))  # marks the selected window
        for name in sorted(os.listdir(local)):
            with open(os.path.join(local, name), "rb") as handle:
                blob = handle.read()
            io.write_bytes_atomic(ws.url("report", name), blob)
            if name.endswith(".parquet"):
                io.write_bytes_atomic(ws.url("results", name), blob)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return ws.url("report", "index.html")


def _stats_schema():
    from schemas import get

    return get("stats")
