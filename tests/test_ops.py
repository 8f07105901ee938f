"""Operations: failed shards' tracebacks in the run's errors log, the workspace lock
(one writer at a time, stale locks reported, `autt unlock`), torch threads sized by each
actor's own CPUs, and the driver's model check needing no GPU."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import schemas
from jobs.cli import main as cli
from pipeline import lock, parquet
from pipeline.workspace import Workspace


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from pipeline.demo import make_micro

    return make_micro(str(tmp_path_factory.mktemp("micro")), n_subjects=2, n_frames=4, extra=2)


def ingest(out, manifest, executor="local", *extra) -> int:
    return cli(["ingest", "--out", str(out), "--manifest", manifest, "--classes", "neutral,pain",
                "--executor", executor, "--quiet", "ingest.shard_size=2", *extra])


def run_dirs(out) -> list[Path]:
    return sorted((Path(out) / "runs").iterdir())


# ---- errors log

@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_failed_shard_leaves_its_full_traceback_in_the_run_folder(micro, tmp_path, monkeypatch,
                                                                    capsys, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    monkeypatch.setenv("AUTT_FAULT", "shard_start:b0000-s0001")
    out = tmp_path / "out"
    assert ingest(out, micro["manifest"], executor, "--workers", "1") == 1
    err = capsys.readouterr().err
    (run,) = run_dirs(out)
    log = (run / "errors.log").read_text()
    assert "[ingest] shard b0000-s0001 failed" in log
    assert "InjectedFault: injected fault at shard_start" in log
    assert 'faults.py", line' in log and "in maybe_fail" in log  # the worker's own frames
    assert "\x1b[" not in log
    assert str(run / "errors.log") in err
    assert "b0000-s0000" not in log  # the other shard finished
    assert sorted(Workspace(str(out)).markers("manifest")) == ["b0000-s0000"]


# ---- the workspace lock

def test_a_second_writer_is_refused_and_nothing_is_lost(micro, tmp_path, monkeypatch, capsys):
    """A second ingest starts while the first holds the workspace (as two invocations would
    both take the next batch number); it is refused, and runs fine once the first is done."""
    from pipeline.ingest import batches

    out = tmp_path / "out"
    second: list[int] = []
    assign = batches.assign

    def first_then_second(*args, **kwargs):
        if not second:  # inside the first ingest, between planning and writing its batch
            second.append(ingest(out, micro["manifest_plus"]))
        return assign(*args, **kwargs)

    monkeypatch.setattr(batches, "assign", first_then_second)
    assert ingest(out, micro["manifest"]) == 0
    assert second == [2]
    err = capsys.readouterr().err
    assert f"workspace {out} is in use by `autt ingest`" in err
    assert f"on host {socket.gethostname()}" in err and "Wait for it to finish" in err
    assert len(run_dirs(out)) == 1  # the refused command wrote nothing
    assert not (out / lock.LOCK_NAME).exists()  # released by the first
    assert ingest(out, micro["manifest_plus"]) == 0
    man = Workspace(str(out)).read_table("manifest", schemas.get("manifest"))
    assert man.num_rows == micro["n_samples_plus"]
    assert sorted(set(man.column("shard_id").to_pylist()))[-1].startswith("b0001-")


def test_a_stale_lock_is_reported_with_how_to_clear_it(micro, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / lock.LOCK_NAME).write_text(json.dumps({
        "owner": "someone", "host": socket.gethostname(), "pid": dead.pid, "run_id": "r1",
        "command": "run", "started_at": "2026-01-01T00:00:00+00:00", "token": "t"}))
    assert ingest(out, micro["manifest"]) == 2
    err = capsys.readouterr().err
    assert f"pid {dead.pid}" in err and "the lock is stale" in err
    assert f"autt unlock --out {out}" in err
    assert cli(["status", "--out", str(out)]) == 0  # readers take no lock
    said = capsys.readouterr().out
    assert "locked by `autt run` (run r1)" in said and "no longer running" in said
    assert f"autt unlock --out {out}" in said
    assert cli(["unlock", "--out", str(out)]) == 0
    assert "removed the lock of `autt run` (run r1)" in capsys.readouterr().out
    assert ingest(out, micro["manifest"]) == 0
    assert cli(["unlock", "--out", str(out)]) == 0
    assert "not locked" in capsys.readouterr().out


def test_unlock_refuses_a_live_holder_unless_forced(tmp_path, capsys):
    held = lock.acquire(str(tmp_path), "r2", "faces")
    assert cli(["unlock", "--out", str(tmp_path)]) == 2
    assert "still running on this host" in capsys.readouterr().err
    assert cli(["unlock", "--out", str(tmp_path), "--force"]) == 0
    held.release()  # no longer its lock: nothing to remove, nothing raised
    assert lock.holder(str(tmp_path)) is None


def test_a_lock_is_exclusive_and_released_for_the_next_writer(tmp_path):
    first = lock.acquire(str(tmp_path), "r1", "ingest")
    with pytest.raises(lock.WorkspaceLocked, match=r"in use by `autt ingest` \(run r1\)"):
        lock.acquire(str(tmp_path), "r2", "faces")
    first.release()
    with lock.acquire(str(tmp_path), "r3", "faces"):
        assert lock.holder(str(tmp_path))["run_id"] == "r3"
    assert lock.holder(str(tmp_path)) is None


# ---- GPU clusters: threads per actor, the driver's model check

@pytest.mark.parametrize("cpus, threads", [(0.5, 1), (2, 2)])
def test_each_actor_sizes_torch_threads_from_its_own_cpus(ray_cluster, cpus, threads):
    from jobs.runner import _Worker

    actor = ray_cluster.remote(_Worker).options(num_cpus=cpus).remote(_threads_given, True)
    try:
        got = ray_cluster.get(actor.__ray_call__.remote(lambda worker: worker.stage), timeout=120)
    finally:
        ray_cluster.kill(actor)
    assert got == threads


def _threads_given(num_threads):
    return num_threads  # the "stage" is the thread count the factory was given


def test_the_driver_checks_the_model_on_cpu_whatever_the_device(tmp_path):
    """A CPU-only head node of a GPU cluster with embed.device=cuda must not exit 2."""
    from jobs.embed import driver_backbone
    from jobs.pipeline_job import _check_backbone
    from pipeline.config import load_config

    cfg = load_config(None, [f"run.out={tmp_path}", "embed.model=autt-tiny",
                             "embed.weights=random", "embed.device=cuda"])
    _check_backbone(cfg)
    assert driver_backbone(cfg.embed).device.type == "cpu"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command,key,executor", [("embed", "embed.device", "local"),
                                                  ("faces", "faces.device", "ray")])
def test_cuda_settings_without_a_gpu_stop_before_any_stage(tmp_path, capsys, command, key, executor):
    from jobs.cli import main as cli

    out = tmp_path / "out"
    rc = cli([command, "--out", str(out), "--executor", executor, "--num-cpus", "1",
              "embed.model=autt-tiny", "embed.weights=random", f"{key}=cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{key}=cuda but" in err, err
    assert "no GPU" in err or "no CUDA device" in err
    assert not (out / "faces").exists() and not (out / "embeddings").exists()


# ---- where each unit ran

@pytest.mark.parametrize("executor", ["local", "ray"])
def test_each_unit_records_the_node_it_ran_on(micro, tmp_path, executor, request):
    """Ray: the node id of the actor that ran the unit; local: the machine's stable id."""
    if executor == "ray":
        ray = request.getfixturevalue("ray_cluster")
        want = {ray.get_runtime_context().get_node_id()}  # one node: the driver's
    else:
        want = {f"local:{socket.gethostname()}"}
    out = tmp_path / executor
    assert ingest(out, micro["manifest"], executor) == 0
    ws = Workspace(str(out))
    stats = ws.read_side_table("stats", "manifest", schemas.get("stats"))
    assert stats.num_rows == len(ws.markers("manifest")) == 2
    assert set(stats.column("node_id").to_pylist()) == want
    for shard in ws.markers("manifest"):
        schemas.check(parquet.read(ws.stats_url("manifest", shard)), schemas.get("stats"))


def test_statistics_written_before_node_ids_read_back_with_a_null_node(micro, tmp_path):
    out = tmp_path / "old"
    assert ingest(out, micro["manifest"]) == 0
    ws = Workspace(str(out))
    first = sorted(ws.markers("manifest"))[0]
    url = ws.stats_url("manifest", first)
    parquet.write(url, parquet.read(url).drop_columns(["node_id"]))  # as schema version 1 wrote it
    stats = ws.read_side_table("stats", "manifest", schemas.get("stats"))
    assert stats.schema.names == schemas.get("stats").names
    by_shard = dict(zip(stats.column("shard_id").to_pylist(), stats.column("node_id").to_pylist()))
    assert by_shard[first] is None and None not in [v for k, v in by_shard.items() if k != first]


def test_credentials_reach_actors_outside_the_logged_runtime_env(monkeypatch):
    """Ray logs a runtime_env whole: only plain variables go there; credentials go to each
    actor's constructor (tests/test_cluster.py checks Ray's logs on S3)."""
    from jobs.runner import forwarded_env

    for key, value in {"AWS_SECRET_ACCESS_KEY": "s", "AWS_ACCESS_KEY_ID": "k", "AWS_SESSION_TOKEN": "t",
                       "HF_TOKEN": "h", "AWS_ENDPOINT_URL": "http://x", "AUTT_FAULT": "f",
                       "UNRELATED": "u"}.items():
        monkeypatch.setenv(key, value)
    plain, secret = forwarded_env()
    assert set(secret) >= {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "HF_TOKEN"}
    assert {"AWS_ENDPOINT_URL", "AUTT_FAULT"} <= set(plain) and not set(plain) & set(secret)
    assert "UNRELATED" not in plain and "UNRELATED" not in secret
