"""The pipeline on real clusters, on one micro dataset (4 subjects, 2 of them targets, 8
pre-cropped face frames per clip, the tiny random CLIP):

- a multi-node Ray cluster on this machine (a head and two workers started with `ray start`,
  each with its own custom resource, 1 CPU, bounded memory and object store, temp dir and
  ports): `autt run` against it, through training and adaptation, records in its statistics
  that units ran on more than one of its nodes, and its results equal a single-node run's;
  its nodes are stopped by process id whatever happens;
- `ray job submit` (the JobSubmissionClient) of `autt run` to that cluster's job server, with
  the runtime_env of infra/runtime_env.yaml: the job's working directory leaves out the venv,
  workspaces and media;
- object storage: `autt run` with the Ray executor reads its manifest and media from a real
  S3-compatible server (moto, loopback) and writes every table, model, adapted context and the
  report there; a rerun does no work; no credential appears in any output or log.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import schemas
from jobs.cli import main as cli
from pipeline import io, parquet
from pipeline.workspace import Workspace
from tests.ray_nodes import BIN, LocalCluster, alive_in_group

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


@pytest.fixture(scope="module")
def cluster():
    """A head and two worker nodes; the head runs the job server when ray[default] is here."""
    c = LocalCluster(workers=2, dashboard=has_job_server() is None)
    c.start()
    pids = [p.pid for p in c.procs]
    try:
        yield c
    finally:
        c.stop()
        for pid in pids:  # every node process we started has ended, children included
            assert not alive_in_group(pid), pid


@pytest.fixture(scope="module")
def multinode_run(micro, cluster, tmp_path_factory):
    """`autt run` against the multi-node cluster, the driver in its own process."""
    out = tmp_path_factory.mktemp("multinode") / "out"
    t0 = time.monotonic()
    done = subprocess.run([str(BIN / "autt"), *run_args(str(micro["dir"]), str(out)),
                           "--ray-address", cluster.address], env=cluster.env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return {"out": out, "stdout": done.stdout, "seconds": time.monotonic() - t0}


def results(out) -> dict:
    """(table, sample, method, model, step) -> class probabilities of every prediction row."""
    ws = Workspace(str(out))
    rows = {}
    for table in ("predictions", "adaptation"):
        for r in ws.read_table(table).to_pandas().itertuples():
            step = None if r.step is None or r.step != r.step else int(r.step)
            rows[(table, r.sample_id, r.method, r.model_id, step)] = (r.status, np.asarray(r.probs))
    return rows


def node_ids(out) -> dict[str, list[str]]:
    ws = Workspace(str(out))
    return {t: ws.read_side_table("stats", t, schemas.get("stats")).column("node_id").to_pylist()
            for t in ws.tables()}


def test_a_multi_node_cluster_spreads_the_units_and_gives_the_single_node_results(
        micro, cluster, multinode_run, tmp_path):
    nodes = node_ids(multinode_run["out"])
    of_resource = cluster.node_of_resource()
    assert sorted(of_resource) == ["autt_head", "autt_worker1", "autt_worker2"]
    assert len(set(of_resource.values())) == 3  # three nodes, each with its own resource
    used = {n for ids in nodes.values() for n in ids}
    assert None not in used and used <= set(of_resource.values()), (used, of_resource)
    assert len(used) >= 2, f"every unit ran on one node: {nodes}"
    assert len(set(nodes["faces"])) >= 2  # 4 face shards over three 1-CPU nodes
    assert {"models", "adaptation"} <= set(nodes)  # through training and adaptation

    single = tmp_path / "single"  # the same command, in one process on one node
    assert cli([*run_args(str(micro["dir"]), str(single)), "--executor", "local", "--quiet"]) == 0
    assert {n for ids in node_ids(single).values() for n in ids} == {f"local:{socket.gethostname()}"}
    a, b = results(multinode_run["out"]), results(single)
    assert a.keys() == b.keys() and len(a) > 40
    assert {k[2] for k in a} >= {"clip-au", "clip-autt", "tpt"}
    for k in a:
        assert a[k][0] == b[k][0], k
        if a[k][0] == "ok":
            np.testing.assert_allclose(a[k][1], b[k][1], rtol=0, atol=TOLERANCE, err_msg=str(k))


def test_ray_job_submit_runs_the_pipeline_from_a_working_dir_without_venv_workspaces_or_media(
        micro, cluster, multinode_run, tmp_path):
    why = has_job_server()
    if why:
        pytest.skip(why)
    from ray.job_submission import JobStatus, JobSubmissionClient

    # The project as a user's checkout would hold it, with what must not be uploaded beside it.
    project = tmp_path / "checkout"
    for name in ("pipeline", "jobs", "schemas", "infra"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    for decoy in (".venv/bin/python", "workspaces/old/manifest/part.parquet", "media/clip.mp4",
                  "autt-demo/report/index.html"):
        (project / decoy).parent.mkdir(parents=True, exist_ok=True)
        (project / decoy).write_text("must not be uploaded")
    env = yaml.safe_load((ROOT / "infra" / "runtime_env.yaml").read_text())
    # No pip: this machine's nodes run in the project's virtual environment already.
    runtime_env = {"working_dir": str(project), "excludes": env["excludes"]}
    listing = ("python -c \"import os, pipeline; print('JOB-DIR', sorted(os.listdir('.')), "
               "'JOB-CODE', pipeline.__file__)\"")
    # The pipeline on the workspace the interactive run made: the job's driver joins the cluster
    # and finds every unit done.
    entry = " ".join([listing, "&&", "autt", *run_args(str(micro["dir"]), str(multinode_run["out"])),
                      "--ray-address", "auto"])
    client = JobSubmissionClient(cluster.dashboard_url)
    job = client.submit_job(entrypoint=entry, runtime_env=runtime_env)
    deadline = time.monotonic() + 300
    while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                         JobStatus.STOPPED}:
        assert time.monotonic() < deadline, f"job {job} still {status}: {client.get_job_logs(job)[-3000:]}"
        time.sleep(1.0)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-5000:]
    listed = next(line for line in logs.splitlines() if line.startswith("JOB-DIR"))
    for kept in ("'jobs'", "'pipeline'", "'schemas'", "'pyproject.toml'"):
        assert kept in listed, listed
    for left_out in ("'.venv'", "'workspaces'", "'media'", "'autt-demo'"):
        assert left_out not in listed, listed
    code = listed.split("JOB-CODE")[1].strip()
    assert not code.startswith(str(ROOT)), code  # the uploaded copy ran, not this checkout
    for stage in ("ingest", "faces+embed", "train", "predict", "baselines", "adapt"):
        assert f"{stage}: 0 shard(s) done" in logs, logs[-3000:]
    assert "report: " in logs


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
    # One ingest shard and CLIP-AUTT alone: every kind of output, fewer round trips to the store.
    args = [*run_args("s3://autt-cluster/data", out), "--executor", "ray", "ingest.shard_size=100",
            "adapt.methods=[clip-autt]"]
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


def test_the_cluster_nodes_stop_by_process_id_even_when_the_test_body_fails():
    """A cluster whose user raises: the nodes it started end, and only those."""
    c = LocalCluster(workers=0, dashboard=False)
    with pytest.raises(RuntimeError, match="the test body failed"):
        try:
            c.start()
            pids = [p.pid for p in c.procs]
            raise RuntimeError("the test body failed")
        finally:
            c.stop()
    for pid in pids:
        assert not alive_in_group(pid), pid
