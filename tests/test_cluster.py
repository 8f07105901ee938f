"""The pipeline on real clusters, on one micro dataset (4 subjects, 2 of them targets, 8
pre-cropped face frames per clip, the tiny random CLIP):

- object storage: `autt run` with the Ray executor reads its manifest and media from a real
  S3-compatible server (moto, loopback) and writes every table, model, adapted context and the
  report there; a rerun does no work; no credential appears in any output or log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.cli import main as cli
from pipeline import io, parquet
from pipeline.workspace import Workspace

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["embed.model=autt-tiny", "embed.weights=random", "train.epochs=2", "protocol.clip_len=4",
            "protocol.window=2", "protocol.min_face_frames=2", "protocol.tta_steps=3",
            "ingest.shard_size=2"]  # 4 ingest / face shards, 1 model, 8 adaptation units
TOLERANCE = 1e-5  # other processes and torch thread counts may round float sums differently
TABLES = ("manifest", "faces", "embeddings/autt-tiny__random-s0", "text_features/autt-tiny__random-s0",
          "models", "predictions", "au_activations", "adaptation", "adapt_units")


def has_job_server() -> str | None:
    """Why the head cannot run the dashboard's job server, or None when it can."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401  (what Ray itself checks)
    except ImportError as exc:
        return f"ray[default] (the cluster extra) is not installed: {exc}"
    return None


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from pipeline.demo import make_micro

    root = tmp_path_factory.mktemp("cluster-micro")
    info = make_micro(str(root), n_subjects=4, n_target=2, n_frames=8)
    return {**info, "dir": root}


def run_args(manifest_root: str, out: str) -> list[str]:
    return ["run", "--manifest", f"{manifest_root}/manifest.csv", "--split", f"{manifest_root}/split.csv",
            "--classes", "neutral,pain", "--out", out, *SETTINGS]


# ---- object storage

SECRET = "autt-cluster-secret-Zq7Xw3Lp9"
ACCESS_KEY = "AKIAAUTTCLUSTERKEY42"


@pytest.fixture
def s3(monkeypatch):
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from tests.s3_server import moto_s3

    with moto_s3(monkeypatch, "autt-cluster", ACCESS_KEY, SECRET) as fs:
        yield fs


def leaked(blob: bytes) -> list[str]:
    return [name for name, value in (("secret", SECRET), ("access key", ACCESS_KEY))
            if value.encode() in blob]


def test_the_pipeline_on_ray_reads_and_writes_s3_and_no_credential_reaches_an_output(
        micro, s3, ray_cluster, capfd):
    s3.put(str(micro["dir"]), "autt-cluster/data", recursive=True)
    out = "s3://autt-cluster/run"
    args = [*run_args("s3://autt-cluster/data", out), "--executor", "ray"]
    assert cli(args) == 0
    ws = Workspace(out)
    man = ws.read_table("manifest").to_pandas()
    assert man["path"].str.startswith("s3://autt-cluster/data/faces/").all()
    assert (man["status"] == "ok").all() and len(man) == micro["n_samples"]
    for table in TABLES:  # every table committed at s3://
        assert ws.markers(table), table
        assert ws.read_table(table).num_rows > 0, table
    objects = s3.find("autt-cluster/run")
    assert any(p.endswith("/model.safetensors") for p in objects)  # the checkpoint
    assert any(p.endswith("/context.safetensors") for p in objects)  # adapted CLIP-AUTT contexts
    assert io.exists(f"{out}/report/index.html") and io.exists(f"{out}/results/stage_stats.parquet")
    assert not [p for p in objects if "/_tmp-" in p]
    printed = capfd.readouterr()

    markers = {t: ws.markers(t) for t in TABLES}
    assert cli(args) == 0  # a rerun does no work
    again = capfd.readouterr()
    for stage in ("ingest", "faces+embed", "train", "predict", "baselines", "adapt"):
        assert f"{stage}: 0 shard(s) done" in again.out, again.out
    assert {t: Workspace(out).markers(t) for t in TABLES} == markers

    # No credential in any object (Parquet decoded: its pages are compressed), in what the
    # commands printed, or in the Ray session's logs (the actors got them as env vars).
    found = {}
    for path in s3.find("autt-cluster/run"):
        blob = s3.cat_file(path)
        if path.endswith(".parquet"):
            table = parquet.read(f"s3://{path}")
            blob += repr(table.to_pylist()).encode() + repr(table.schema.metadata).encode()
        if leaked(blob):
            found[path] = leaked(blob)
    for name, text in (("stdout", printed.out + again.out), ("stderr", printed.err + again.err)):
        if leaked(text.encode()):
            found[name] = leaked(text.encode())
    logs = Path(ray_cluster._private.worker._global_node.get_session_dir_path()) / "logs"
    for path in logs.rglob("*"):
        if path.is_file() and leaked(path.read_bytes()):
            found[str(path)] = leaked(path.read_bytes())
    assert not found, found
    assert any(p.endswith("/config.yaml") for p in objects)  # the config copy was among them
