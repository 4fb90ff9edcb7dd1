"""Ray nodes on a namespace network, one per host."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from launch.netns.network import (BIN, DASHBOARD_PORT, GCS_PORT, HOST_IF, REPO, SLOT, NetnsError, Network, sh,
                                  signal_group)

# ---------------------------------------------------------------- Ray on the network

def node_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "token"  # Ray 2.60 default; every node and client sends ~/.ray/auth_token
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["GLOO_SOCKET_IFNAME"] = HOST_IF  # torch's gloo uses the shaped link, not loopback
    env.update(extra or {})
    return env


class RayCluster:
    """One `ray start --block` per host, each a child of this process."""

    def __init__(self, net: Network, *, cpus_per_node: int, object_store_mb: int, log_dir: Path):
        self.net, self.cpus, self.store_mb, self.log_dir = net, cpus_per_node, object_store_mb, log_dir
        self.nodes: list[subprocess.Popen] = []

    @property
    def head(self) -> str:
        return self.net.addr(0)

    @property
    def gcs_address(self) -> str:
        return f"{self.head}:{GCS_PORT}"

    @property
    def dashboard(self) -> str:
        return f"http://{self.head}:{DASHBOARD_PORT}"

    def client_env(self) -> dict:
        """Environment of a command run in host 0: `python -m launch run` joins through
        RAY_ADDRESS; `ray job submit --address $SPNET_DASHBOARD` reaches the job server."""
        return node_env({"RAY_ADDRESS": self.gcs_address, "SPNET_DASHBOARD": self.dashboard,
                         "SPNET_HOSTS": " ".join(self.net.addr(i) for i in range(self.net.hosts))})

    def start(self, timeout: float = 180) -> None:
        sh(str(BIN / "ray"), "get-auth-token", "--generate")  # made once per machine, shared by all nodes
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.net.hosts):
            common = [f"--node-ip-address={self.net.addr(i)}", f"--num-cpus={self.cpus}",
                      f"--resources={json.dumps({SLOT: 1})}", f"--temp-dir={self.log_dir / f'h{i}'}",
                      f"--object-store-memory={self.store_mb * 1024 * 1024}", "--disable-usage-stats", "--block"]
            if i == 0:
                args = ["--head", f"--port={GCS_PORT}", f"--dashboard-host={self.head}",
                        f"--dashboard-port={DASHBOARD_PORT}", *common]
            else:
                args = [f"--address={self.gcs_address}", *common]
            self._spawn(i, args)
            if i == 0:
                self._wait_port(0, DASHBOARD_PORT, timeout)
        self._wait_nodes(timeout)

    def _spawn(self, i: int, args: list[str]) -> None:
        log = (self.log_dir / f"ray-start-h{i}.log").open("w")
        # RAY_ADDRESS: Ray processes that look for "the" cluster (address "auto": Ray Train's
        # placement group cleaner, state API clients) would otherwise also find other Ray
        # instances on this machine through the shared process table and /tmp/ray.
        self.nodes.append(subprocess.Popen(
            ["ip", "netns", "exec", self.net.host(i), str(BIN / "ray"), "start", *args],
            env=node_env({"RAY_ADDRESS": self.gcs_address}), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))

    def _check_alive(self) -> None:
        for i, node in enumerate(self.nodes):
            if node.poll() is not None:
                tail = (self.log_dir / f"ray-start-h{i}.log").read_text()[-2000:]
                raise NetnsError(f"ray start on {self.net.host(i)} exited ({node.returncode}):\n{tail}")

    def _wait_port(self, i: int, port: int, timeout: float) -> None:
        probe = (f"import socket,sys; s=socket.socket(); s.settimeout(1); "
                 f"sys.exit(s.connect_ex(({self.net.addr(i)!r},{port})))")
        self._wait_until(i, probe, every=1, timeout=timeout,
                         failure=f"nothing listens on {self.net.addr(i)}:{port} after {timeout:.0f} s")

    def _wait_nodes(self, timeout: float) -> None:
        script = ("import ray, sys; ray.init(logging_level='ERROR'); "
                  f"sys.exit(0 if ray.cluster_resources().get({SLOT!r}, 0) >= {self.net.hosts} else 3)")
        self._wait_until(0, script, every=2, timeout=timeout, env=self.client_env(),
                         failure=f"{self.net.hosts} Ray nodes did not join within {timeout:.0f} s; "
                                 f"logs in {self.log_dir}")

    def _wait_until(self, i: int, script: str, *, every: float, timeout: float, failure: str,
                    env: dict | None = None) -> None:
        """Run `script` in host i's namespace every `every` s until it exits 0; a node whose
        `ray start` died, or `timeout`, raises (with `failure`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if in_ns(self.net.host(i), [sys.executable, "-c", script], env=env, check=False).returncode == 0:
                return
            time.sleep(every)
        raise NetnsError(failure)

    def placement(self) -> dict:
        """Where Ray ran each Ray Train worker (dead ones included), by node IP; from Ray's
        state API, queried inside host 0."""
        script = r"""
import json
from ray.util.state import list_actors, list_nodes
nodes = {n.node_id: n.node_ip for n in list_nodes(detail=True, raise_on_missing_output=False)}
actors = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=10000,
                     raise_on_missing_output=False)
print(json.dumps([{"ip": nodes.get(a.node_id), "pid": a.pid, "state": a.state} for a in actors]))
"""
        done = in_ns(self.net.host(0), [sys.executable, "-c", script], env=self.client_env(), check=False)
        if done.returncode != 0:
            return {"error": done.stderr[-1000:]}
        workers = json.loads(done.stdout.strip().splitlines()[-1])
        return {"workers": workers, "per_node": dict(Counter(worker["ip"] for worker in workers))}

    def stop(self) -> None:
        # Workers before the head; SIGTERM makes `ray start --block` stop its daemons (a
        # worker node in about a second; the head's graceful stop takes ~30 s here, so it
        # is killed after a few: the whole cluster is going away, nothing is kept).
        for node in reversed(self.nodes):
            if node.poll() is None:
                signal_group(node, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for node in reversed(self.nodes):
            try:
                node.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(node, signal.SIGKILL)
                node.wait(timeout=10)
        self.nodes.clear()


def in_ns(ns: str, argv: list[str], *, env: dict | None = None, check: bool = True,
          timeout: float | None = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", "netns", "exec", ns, *argv], env=env or node_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
    if check and done.returncode != 0:
        raise NetnsError(f"in {ns}: `{shlex.join(argv)}` failed ({done.returncode}): {done.stderr[-2000:]}")
    return done
