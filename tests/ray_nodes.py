"""A real multi-node Ray cluster on this machine, for the cluster tests.

In: how many worker nodes, and whether the head runs the dashboard and job server. Out: a
running cluster (a head and workers started with `ray start --block` on loopback, each with
its own custom resource, CPU count, memory and object store bounds, temp dir and ports),
its address, its nodes' ids, and ``stop()``, which ends exactly the processes it started (by
process id: the `ray start --block` of each node stops that node's processes when
terminated; its process group is killed if it does not). Ray maps 127.0.0.1 to the
machine's own address for its nodes (``services.resolve_ip_for_localhost``); every node still
runs here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
OBJECT_STORE_BYTES = 80_000_000   # Ray's minimum is 75 MB
MEMORY_BYTES = 1_500_000_000      # what Ray may schedule on a node (tasks and actors)
PORTS_PER_NODE = 40


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive ports that are all free now (a random start)."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("", p))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no block of {n} free ports found")


def alive_in_group(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that still run (zombies, which a container's init
    may leave unreaped, do not count)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


@dataclass
class LocalCluster:
    workers: int = 2
    dashboard: bool = False
    cpus_per_node: int = 1
    procs: list[subprocess.Popen] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    base: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.base}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.base + 1}"

    @property
    def resources(self) -> list[str]:
        """Each node's own custom resource, head first."""
        return ["autt_head"] + [f"autt_worker{i}" for i in range(1, self.workers + 1)]

    def env(self) -> dict[str, str]:
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # `autt` and `ray` of this venv
        return dict(os.environ, PATH=path, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")

    def start(self, timeout: float = 120) -> LocalCluster:
        self.base = free_port_block(PORTS_PER_NODE * (self.workers + 1))
        try:
            self._start_node(0, ["--head", f"--port={self.base}", f"--ray-client-server-port={self.base + 2}",
                                 *(["--include-dashboard=true", "--dashboard-host=127.0.0.1",
                                    f"--dashboard-port={self.base + 1}"] if self.dashboard
                                   else ["--include-dashboard=false"])])
            self._wait_log(0, "Ray runtime started", timeout)
            for i in range(1, self.workers + 1):
                self._start_node(i, [f"--address={self.address}"])
            self.wait(self.workers + 1, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, i: int, args: list[str]) -> None:
        first = self.base + PORTS_PER_NODE * i + 10
        temp = tempfile.mkdtemp(prefix=f"autt-ray{i}-", dir="/tmp")  # short: socket paths
        self.temp_dirs.append(temp)
        log = Path(temp + ".log")
        self.logs.append(log)
        ports = [f"--node-manager-port={first}", f"--object-manager-port={first + 1}",
                 f"--metrics-export-port={first + 2}", f"--dashboard-agent-listen-port={first + 3}",
                 f"--dashboard-agent-grpc-port={first + 4}", f"--runtime-env-agent-port={first + 5}",
                 f"--min-worker-port={first + 10}", f"--max-worker-port={first + 29}"]
        cmd = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
               f"--num-cpus={self.cpus_per_node}", "--num-gpus=0", f"--memory={MEMORY_BYTES}",
               f"--object-store-memory={OBJECT_STORE_BYTES}", f"--temp-dir={temp}",
               f"--resources={json.dumps({self.resources[i]: 1})}", *ports, *args]
        with open(log, "w") as out:
            self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                               start_new_session=True))

    def nodes(self) -> list[dict]:
        """The alive nodes as Ray reports them: NodeID, Resources (asked in a fresh process,
        so the caller's own Ray session, if any, is left alone)."""
        code = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR', "
                "log_to_driver=False); print(json.dumps([{k: n[k] for k in ('NodeID', 'Resources')} "
                "for n in ray.nodes() if n['Alive']]))")
        done = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True, text=True,
                              env=self.env(), timeout=60)
        if done.returncode:
            raise RuntimeError(f"cannot list the nodes of {self.address}: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def node_of_resource(self) -> dict[str, str]:
        """Custom resource -> the id of the node that has it."""
        return {r: n["NodeID"] for n in self.nodes() for r in n["Resources"] if r in self.resources}

    def _wait_log(self, i: int, text: str, timeout: float) -> None:
        t0 = time.monotonic()
        while text not in self.logs[i].read_text():
            if self.procs[i].poll() is not None or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"`ray start` of node {i} did not start: {self.logs[i].read_text()[-3000:]}")
            time.sleep(0.5)

    def wait(self, n: int, timeout: float) -> None:
        t0 = time.monotonic()
        while True:
            for p, log in zip(self.procs, self.logs):
                if p.poll() is not None:
                    raise RuntimeError(f"`ray start` exited with {p.returncode}: {log.read_text()[-3000:]}")
            try:
                if len(self.node_of_resource()) >= n:
                    return
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError):
                pass
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{n} node(s) not up after {timeout:.0f}s; logs: "
                                   + " | ".join(log.read_text()[-1500:] for log in self.logs))
            time.sleep(2.0)

    def stop(self) -> None:
        """Terminate each node's `ray start --block` (workers first), then kill the process
        group of any that has not ended; remove the temp dirs."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 40
        for p in reversed(self.procs):
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if alive_in_group(p.pid):  # the node's children (raylet, workers) share its group
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        deadline = time.monotonic() + 10
        while any(alive_in_group(p.pid) for p in self.procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        for log in self.logs:
            log.unlink(missing_ok=True)
        self.procs.clear()
