"""The same pipeline code on s3://: a real S3-compatible server (moto) on loopback.

The endpoint and credentials reach every process the standard way, through the environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), so Ray workers see them as well.
"""

from __future__ import annotations

import pytest

import schemas
from jobs.cli import main as cli
from pipeline import io
from pipeline.workspace import Workspace
from tests.s3_server import moto_s3

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

TINY = ["embed.model=autt-tiny", "embed.weights=random"]


@pytest.fixture(scope="module")
def s3(monkeypatch_module):
    with moto_s3(monkeypatch_module, "autt-test") as fs:
        yield fs


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_ingest_faces_embed_on_s3(s3, tmp_path, capsys):
    from pipeline.demo import make_micro

    info = make_micro(str(tmp_path / "micro"), n_subjects=2, n_frames=4)
    s3.put(str(tmp_path / "micro"), "autt-test/data", recursive=True)
    out = "s3://autt-test/run"
    common = ["--out", out, "--executor", "local", "--quiet"]
    assert cli(["ingest", "--manifest", "s3://autt-test/data/manifest.csv",
                "--classes", "neutral,pain", *common]) == 0
    assert cli(["embed", "--fused", *common, *TINY]) == 0
    ws = Workspace(out)
    man = ws.read_table("manifest", schemas.get("manifest")).to_pandas()
    assert len(man) == info["n_samples"] and set(man["status"]) == {"ok"}
    assert man["path"].str.startswith("s3://autt-test/data/faces/").all()
    faces = ws.read_table("faces")
    assert faces.num_rows == info["n_samples"] * 4
    assert ws.read_table("embeddings/autt-tiny__random-s0").num_rows == faces.num_rows
    assert not [p for p in s3.find("autt-test/run") if "/_tmp-" in p]  # renames completed
    assert io.exists(f"{out}/manifest/_done/b0000-s0000.json")
    # rerun: nothing to do, on S3 as locally
    capsys.readouterr()
    assert cli(["embed", "--fused", *common, *TINY]) == 0
    assert "faces+embed: 0 shard(s) done, 1 already done" in capsys.readouterr().out


def test_a_new_batch_on_s3_is_processed_by_ray_workers(s3, tmp_path, ray_cluster):
    """Markers written by Ray actors must be seen by the driver's next listing: the second
    `autt run` processes the newly ingested batch (it once skipped it and exited 0)."""
    from pipeline.demo import make_micro

    info = make_micro(str(tmp_path / "micro"), n_subjects=2, n_frames=4, extra=2)
    s3.put(str(tmp_path / "micro"), "autt-test/ray-data", recursive=True)
    out = "s3://autt-test/ray-run"
    common = ["--out", out, "--quiet", "--classes", "neutral,pain", *TINY]
    # The first run fills this process's listing cache; in the second, Ray actors write the
    # new batch's manifest markers, which the driver must then see.
    assert cli(["run", "--manifest", "s3://autt-test/ray-data/manifest.csv", "--executor", "local",
                *common]) == 0
    assert cli(["run", "--manifest", "s3://autt-test/ray-data/manifest_plus.csv", "--executor", "ray",
                *common]) == 0
    ws = Workspace(out)
    assert sorted(ws.markers("faces")) == ["b0000-s0000", "b0001-s0000"]
    faces = ws.read_table("faces")
    emb = ws.read_table("embeddings/autt-tiny__random-s0")
    assert len(set(faces.column("sample_id").to_pylist())) == info["n_samples_plus"]
    assert len(set(emb.column("sample_id").to_pylist())) == info["n_samples_plus"]


def test_the_workspace_lock_is_a_conditional_put_on_s3(s3):
    """Exclusive through If-None-Match: a plain overwrite would let the second writer in."""
    from pipeline import lock

    root = "s3://autt-test/locked"
    first = lock.acquire(root, "r1", "ingest")
    with pytest.raises(lock.WorkspaceLocked, match=r"in use by `autt ingest` \(run r1\)"):
        lock.acquire(root, "r2", "faces")
    assert lock.holder(root)["run_id"] == "r1"
    first.release()
    assert lock.holder(root) is None
    with lock.acquire(root, "r3", "faces"):
        assert lock.holder(root)["run_id"] == "r3"
