"""The same pipeline code on s3://: a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import socket

import pytest

import schemas
from jobs.cli import main as cli
from pipeline import io
from pipeline.workspace import Workspace

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3(monkeypatch_module):
    import fsspec

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch_module.setenv(key, value)
    monkeypatch_module.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    fs = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
    fs.mkdir("autt-test")
    yield fs
    server.stop()


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
    assert cli(["embed", "--fused", *common, "embed.model=autt-tiny", "embed.weights=random"]) == 0
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
    assert cli(["embed", "--fused", *common, "embed.model=autt-tiny", "embed.weights=random"]) == 0
    assert "faces+embed: 0 shard(s) done, 1 already done" in capsys.readouterr().out
