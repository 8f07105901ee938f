"""The files in infra/ parse and agree with the code: each opens with how to use it, the image
installs the project's runtime extras on a Ray base image of the pinned Ray version, the job
entry points are real `autt` commands with valid settings, the runtime_env ships the project's
dependencies without its venv, workspaces or media, and the clusters declare their GPUs under
the resource names the runner requests, so GPU stages do get GPUs there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from jobs import cli, runner

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEV_EXTRAS = {"test"}  # extras for working on the project, not for running it


def load(name: str) -> dict:
    return yaml.safe_load((INFRA / name).read_text())


def pinned_ray() -> str:
    (version,) = re.findall(r"^ray==(\S+)$", (ROOT / "constraints" / "cpu.txt").read_text(), re.M)
    return version


def requirement_name(req: str) -> str:
    return re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_every_infra_file_opens_with_how_to_use_it_and_the_yaml_parses():
    files = sorted(p for p in INFRA.iterdir() if p.is_file() and p.suffix != ".md")
    assert {p.name for p in files} >= {"Dockerfile", "cluster-aws.yaml", "cluster-onprem.yaml",
                                       "kuberay-raycluster.yaml", "kuberay-rayjob.yaml",
                                       "runtime_env.yaml"}
    for path in files:
        head = path.read_text().splitlines()[:12]
        assert head[0].startswith("# "), f"{path.name} does not open with a comment"
        assert any(re.search(r"\busage\b|\bbuild\b|ray job submit|kubectl|docker", line, re.I)
                   for line in head if line.startswith("#")), f"{path.name}: no usage in its header"
        if path.suffix == ".yaml":
            assert isinstance(load(path.name), dict), path.name


def test_the_image_installs_the_runtime_extras_on_the_pinned_ray_gpu_base():
    text = (INFRA / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    image, tag = base.split(":")
    assert image == "rayproject/ray" and tag.startswith(f"{pinned_ray()}-") and "gpu" in tag, base
    (extras,) = re.findall(r'pip install [^\n]*-e "\.\[([^\]]*)\]"', text)
    runtime = set(PYPROJECT["project"]["optional-dependencies"]) - DEV_EXTRAS
    assert set(extras.split(",")) == runtime  # every runtime extra, nothing undefined
    for folder in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:  # pipeline* ...
        assert re.search(rf"^COPY .*\b{folder.rstrip('*')}\b", text, re.M), folder
    assert "cluster" in runtime and any(r.startswith("ray[default]")
                                        for r in PYPROJECT["project"]["optional-dependencies"]["cluster"])


def test_the_kuberay_manifests_run_the_image_with_a_gpu_worker_group_and_the_pinned_ray():
    cluster = load("kuberay-raycluster.yaml")
    job = load("kuberay-rayjob.yaml")
    assert (cluster["kind"], job["kind"]) == ("RayCluster", "RayJob")
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]  # the job's cluster is the documented one
    spec = cluster["spec"]
    assert spec["rayVersion"] == pinned_ray()
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    (gpu_group,) = [g for g in spec["workerGroupSpecs"]
                    if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu_group["minReplicas"] >= 1  # GPUs present when a stage sizes its actors
    images = {c["image"] for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
              for c in group["template"]["spec"]["containers"]}
    assert images == {"clip-autt:0.1.0"} and "clip-autt:0.1.0" in (INFRA / "Dockerfile").read_text()
    for text in ((INFRA / "kuberay-raycluster.yaml").read_text(), (INFRA / "kuberay-rayjob.yaml").read_text()):
        assert not re.search(r"AWS_SECRET_ACCESS_KEY\s*:", text)  # credentials come from a secret


def entry_points() -> list[str]:
    """Every command line infra/ tells a user to run the pipeline with."""
    lines = [load("kuberay-rayjob.yaml")["spec"]["entrypoint"]]
    for path in sorted(INFRA.iterdir()):
        if path.is_file():
            lines += re.findall(r"^#\s+((?:autt|python -m jobs\.cli) .*)$", path.read_text(), re.M)
    return lines


def test_the_job_entry_points_are_autt_commands_with_valid_settings():
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts["autt"] == "jobs.cli:main"
    points = entry_points()
    assert len(points) >= 4
    for line in points:
        argv = shlex.split(line)
        argv = argv[3:] if argv[:3] == ["python", "-m", "jobs.cli"] else argv[1:]
        args, extra = cli.parser().parse_known_args(argv)
        args.overrides = list(args.overrides or []) + extra
        assert args.command == "run" and args.ray_address == "auto", line
        cfg = cli.build_config(args)  # unknown keys or bad values raise here
        assert cfg.run.out.startswith("s3://") and cfg.ingest.root.startswith("s3://"), line
    assert "__main__" in (ROOT / "jobs" / "cli.py").read_text()  # `python -m jobs.cli` runs main


def test_the_runtime_env_ships_the_code_and_the_dependencies_without_venv_workspaces_or_media():
    env = load("runtime_env.yaml")
    assert env["working_dir"] == "."
    excludes = set(env["excludes"])
    assert {".venv/", ".git/", "workspaces/", "media/", "autt-demo/"} <= excludes
    for line in (ROOT / ".gitignore").read_text().splitlines():  # what git leaves out, Ray does too
        if line.strip() and not line.startswith("#"):
            assert line.lstrip("/") in excludes, line
    want = ({requirement_name(r) for r in PYPROJECT["project"]["dependencies"]} - {"ray"}) | {
        requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["s3"]}
    got = [requirement_name(r) for r in env["pip"]["packages"]]
    assert sorted(got) == sorted(want)  # each once, ray left to the cluster
    specs = {requirement_name(r): r for r in PYPROJECT["project"]["dependencies"]}
    for r in env["pip"]["packages"]:  # the same version ranges
        assert specs.get(requirement_name(r), r) == r


def node_types(name: str) -> dict:
    return load(name)["available_node_types"]


@pytest.mark.parametrize("share", [True, 0.25])
def test_the_launcher_gpu_workers_are_what_the_runner_asks_for(share):
    """The nodes the launcher config makes, as Ray would report them: GPU stages get one
    actor per GPU (or per share of one) that fits on a GPU node, and CPU-only work stays on
    the CPUs, no actor asking more CPUs than one node has."""
    config = load("cluster-aws.yaml")
    types = node_types("cluster-aws.yaml")
    head = types[config["head_node_type"]]
    assert head["resources"].get(runner.GPU, 0) == 0
    gpu_types = {k: t for k, t in types.items() if t["resources"].get(runner.GPU, 0) >= 1}
    assert gpu_types, f"no node type declares {runner.GPU!r}"
    for t in types.values():
        assert set(t["resources"]) <= {runner.CPU, runner.GPU}, t["resources"]
    for t in gpu_types.values():  # started with the cluster: stages size actors on what exists
        assert t["min_workers"] == t["max_workers"] >= 1
    nodes = [head["resources"]] + [t["resources"] for t in gpu_types.values() for _ in range(t["min_workers"])]
    n_gpus = sum(x.get(runner.GPU, 0) for x in nodes)
    per = 1.0 if share is True else share
    n, cpus, gpus = runner.plan_resources(nodes, None, 1000, share)
    assert gpus == per and n == int(n_gpus / per)
    for t in gpu_types.values():  # every actor of a GPU node fits there, CPUs included
        on_one = int(t["resources"][runner.GPU] / per)
        assert on_one * cpus <= t["resources"][runner.CPU]
    n, cpus, gpus = runner.plan_resources(nodes, None, 1000, False)
    assert gpus == 0 and n == int(sum(x[runner.CPU] for x in nodes))


def test_no_actor_asks_more_cpus_than_one_node_has():
    """Three 1-CPU nodes and one unit: the unit's actor asks under 1 CPU (it once asked 2.7,
    which no node had, and waited for ever)."""
    nodes = [{"CPU": 1.0, "autt_head": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]
    assert runner.plan_resources(nodes, None, 1, False) == (1, 0.9, 0.0)
    n, cpus, _ = runner.plan_resources(nodes, None, 10, False)
    assert n == 3 and cpus <= 1.0
    n, cpus, gpus = runner.plan_resources([{"CPU": 2.0, "GPU": 1.0}], None, 10, 0.25)
    assert (n, gpus) == (4, 0.25) and 4 * cpus <= 2.0
    assert runner.plan_resources([{"CPU": 4.0, "GPU": 0.5}], None, 10, True) == (4, 0.9, 0.0)  # no whole GPU
    assert runner.plan_resources([], None, 3, False) == (1, 0.9, 0.0)


def test_the_onprem_config_installs_the_extras_the_image_does():
    text = (INFRA / "cluster-onprem.yaml").read_text()
    assert '[cluster,s3]' in text and isinstance(load("cluster-onprem.yaml")["provider"], dict)
