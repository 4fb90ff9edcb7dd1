"""A real multi-node Ray cluster on one machine: Linux network namespaces as hosts,
veth links shaped with `tc`, one Ray node per namespace. Needs root and iproute2.

    python -m launch.netns run   [NET] [RAY] -- COMMAND ...     cluster up, COMMAND in host 0, down
    python -m launch.netns run   [NET] [RAY] --spec SPEC [--set K=V ...]   a sparsepop job, one worker per host
    python -m launch.netns up    [NET] [RAY]                    cluster up until Ctrl-C (use it from another shell)
    python -m launch.netns probe [NET] [--mbytes M]             no Ray: measure each link's TCP throughput
    python -m launch.netns cleanup                              remove every spnet-* leftover (also: down)

Topology (N = --hosts; every name starts with `spnet-<tag>-`, addresses exist only inside
these namespaces; the root namespace gets no address, link, bridge or route):

    spnet-<tag>-h0 [sp0 10.213.0.1] ==veth== [p0]  spnet-<tag>-sw  (bridge br0)
    spnet-<tag>-h1 [sp0 10.213.0.2] ==veth== [p1]      ...
    ...

Each host's link is shaped in both directions with a token bucket (`tbf rate R` on `sp0`,
host -> switch, and on `pI`, switch -> host), like a switch port of speed R; `--delay-ms`
adds netem delay where the kernel has netem. Host 0 runs the Ray head (GCS :6379, dashboard
:8265), the others join it; every node gets the custom resource `node_slot: 1`, so a job
asking `resources_per_worker: {CPU: 1, node_slot: 1}` lands one worker per node. Every node
has its own `--temp-dir` (/tmp/spnet-<tag>/hI): nodes of one cluster on one filesystem
would otherwise share socket and log paths. `GLOO_SOCKET_IFNAME=sp0` makes torch's gloo
bind to the shaped interface (the machine's hostname resolves to 127.0.0.1, which in a
namespace is that namespace's own loopback).

Ray daemons belong to the process that started them, so one invocation starts the cluster,
uses it and tears it down (Ray processes, namespaces, links, temp dirs), also on failure,
Ctrl-C and SIGTERM. `cleanup` removes what a killed invocation left behind.
"""
import argparse
import contextlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "spnet-"
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST_IF = "sp0"  # the host's interface, the same name in every namespace (GLOO_SOCKET_IFNAME)
GCS_PORT, DASHBOARD_PORT = 6379, 8265
SLOT = "node_slot"  # custom resource: one per node
ETC_NETNS = Path("/etc/netns")  # per-namespace /etc files, see Network._write_etc


class NetnsError(RuntimeError):
    pass


def sh(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=capture, text=True)
    if check and done.returncode != 0:
        raise NetnsError(f"`{shlex.join(args)}` failed ({done.returncode}): {(done.stderr or '').strip()}")
    return done


def parse_rate(text: str) -> float:
    """'100mbit', '1gbit', '10gbit', '2.5gbit' -> bits per second."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(k|m|g)?bit\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give a rate like 100mbit, 1gbit, 10gbit")
    return float(match.group(1)) * {None: 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2)]


def ns_names(prefix: str = PREFIX) -> list[str]:
    out = sh("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix)]


# ---------------------------------------------------------------- the network

@dataclass
class Network:
    """N hosts on a bridge inside a switch namespace; nothing in the root namespace."""

    hosts: int = 2
    rate_bps: float | None = 1e9  # None: unshaped
    delay_ms: float = 0.0
    subnet: str = "10.213.0"  # /24, addresses .1 .. .N
    tag: str = field(default_factory=lambda: str(os.getpid()))
    created: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{PREFIX}{self.tag}-sw"

    def host(self, i: int) -> str:
        return f"{PREFIX}{self.tag}-h{i}"

    def addr(self, i: int) -> str:
        return f"{self.subnet}.{i + 1}"

    def up(self) -> None:
        if not 2 <= self.hosts <= 200:
            raise NetnsError("--hosts must be between 2 and 200")
        try:
            private = ipaddress.ip_network(f"{self.subnet}.0/24").is_private
        except ValueError:
            private = False
        if not private or self.subnet.startswith("127."):
            raise NetnsError(f"--subnet {self.subnet!r}: give the first three octets of a private /24 "
                             "(e.g. 10.213.0), which only these namespaces will use")
        self._add_ns(self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        for i in range(self.hosts):
            host, port = self.host(i), f"p{i}"
            self._add_ns(host)
            sh("ip", "-n", host, "link", "set", "lo", "up")
            # Both ends are created inside namespaces: the root namespace never sees them.
            sh("ip", "-n", host, "link", "add", HOST_IF, "type", "veth", "peer", "name", port,
               "netns", self.switch)
            sh("ip", "-n", self.switch, "link", "set", port, "master", "br0")
            sh("ip", "-n", self.switch, "link", "set", port, "up")
            sh("ip", "-n", host, "addr", "add", f"{self.addr(i)}/24", "dev", HOST_IF)
            sh("ip", "-n", host, "link", "set", HOST_IF, "up")
            self._shape(host, HOST_IF)        # host -> switch (upload)
            self._shape(self.switch, port)    # switch -> host (download)
        for i in range(self.hosts):
            self._write_etc(i)

    def _write_etc(self, i: int) -> None:
        """`ip netns exec NS` bind-mounts /etc/netns/NS/* over /etc/*: every name lookup
        inside a host is answered from these files (the cluster's addresses, the machine's
        hostname on loopback) and DNS goes to the namespace's own loopback, so nothing
        inside ever tries an address outside the cluster."""
        folder = ETC_NETNS / self.host(i)
        folder.mkdir(parents=True, exist_ok=True)
        names = "\n".join(f"{self.addr(j)} {PREFIX}h{j}" for j in range(self.hosts))
        (folder / "hosts").write_text(f"127.0.0.1 localhost {socket.gethostname()}\n{names}\n")
        (folder / "resolv.conf").write_text("nameserver 127.0.0.1\n")

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.created.append(name)

    def reshape(self, rate_bps: float | None) -> None:
        """Change every link's rate in place (a running Ray cluster keeps running)."""
        self.rate_bps = rate_bps
        for i in range(self.hosts):
            for ns, dev in ((self.host(i), HOST_IF), (self.switch, f"p{i}")):
                sh("tc", "-n", ns, "qdisc", "del", "dev", dev, "root", check=False)
                self._shape(ns, dev)

    def _shape(self, ns: str, dev: str) -> None:
        parent = ["root"]
        if self.delay_ms > 0:
            done = sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem",
                      "delay", f"{self.delay_ms}ms", "limit", "100000", check=False)
            if done.returncode != 0:
                raise NetnsError(f"--delay-ms needs the netem qdisc, which this kernel lacks "
                                 f"(CONFIG_NET_SCH_NETEM): {done.stderr.strip()}; run without --delay-ms")
            parent = ["parent", "1:1"]
        if self.rate_bps:
            # burst: 2 ms of traffic (at least 64 KiB, above a veth GSO packet), so the kernel
            # timer can keep the rate; queue: 100 ms at the rate before tbf drops.
            burst = max(int(self.rate_bps / 8 * 0.002), 64 * 1024)
            sh("tc", "-n", ns, "qdisc", "add", "dev", dev, *parent, "handle", "10:", "tbf",
               "rate", f"{int(self.rate_bps)}bit", "burst", str(burst), "latency", "100ms")

    def describe(self) -> str:
        rate = "unshaped" if not self.rate_bps else f"{self.rate_bps / 1e9:g} Gbit/s" if self.rate_bps >= 1e9 \
            else f"{self.rate_bps / 1e6:g} Mbit/s"
        delay = f", +{self.delay_ms:g} ms delay" if self.delay_ms else ""
        hosts = ", ".join(f"{self.host(i)}={self.addr(i)}" for i in range(self.hosts))
        return f"{self.hosts} hosts on bridge {self.switch}/br0, links {rate} each way{delay}: {hosts}"

    def counters(self) -> dict[str, dict[str, int]]:
        """Bytes through each host's interface so far (from the kernel's counters)."""
        result = {}
        for i in range(self.hosts):
            out = sh("ip", "-n", self.host(i), "-s", "-j", "link", "show", HOST_IF).stdout
            stats = json.loads(out)[0]["stats64"]
            result[self.addr(i)] = {"tx_bytes": stats["tx"]["bytes"], "rx_bytes": stats["rx"]["bytes"]}
        return result

    def down(self) -> None:
        for name in reversed(self.created):
            remove_namespace(name)
        self.created.clear()


def remove_etc(name: str) -> None:
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
    with contextlib.suppress(OSError):
        ETC_NETNS.rmdir()  # only if empty: other tools' namespaces may keep files there


def remove_namespace(name: str) -> None:
    """Kill what still runs inside (only our namespaces hold these pids), then delete it
    (its veth ends go with it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in sh("ip", "netns", "pids", name, check=False).stdout.split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            if not sh("ip", "netns", "pids", name, check=False).stdout.split():
                break
            time.sleep(0.2)
    sh("ip", "netns", "del", name, check=False)
    remove_etc(name)


def cleanup() -> int:
    names = ns_names()
    # Hosts first, switches last; then the per-node Ray temp dirs.
    for name in sorted(names, key=lambda n: n.endswith("-sw")):
        remove_namespace(name)
        print(f"removed namespace {name}")
    ours = re.compile(rf"{PREFIX}[0-9]+(-(h[0-9]+|sw))?")  # spnet-<tag> temp dirs, spnet-<tag>-* /etc/netns dirs
    folders = [*Path(tempfile.gettempdir()).glob(f"{PREFIX}*"), *ETC_NETNS.glob(f"{PREFIX}*")]
    removed = list(names)
    for folder in (f for f in folders if ours.fullmatch(f.name)):
        shutil.rmtree(folder, ignore_errors=True)
        print(f"removed {folder}")
        removed.append(folder)
    left = ns_names()
    if left:
        print(f"error: still present: {' '.join(left)}", file=sys.stderr)
        return 1
    if not removed:
        print("nothing to clean up")
    return 0


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

    def node_env(self) -> dict:
        # Ray processes that look for "the" cluster (address "auto": Ray Train's placement
        # group cleaner, state API clients) would otherwise also find other Ray instances
        # on this machine through the shared process table and /tmp/ray.
        return node_env({"RAY_ADDRESS": self.gcs_address})

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
        self.nodes.append(subprocess.Popen(
            ["ip", "netns", "exec", self.net.host(i), str(BIN / "ray"), "start", *args],
            env=self.node_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def _check_alive(self) -> None:
        for i, node in enumerate(self.nodes):
            if node.poll() is not None:
                tail = (self.log_dir / f"ray-start-h{i}.log").read_text()[-2000:]
                raise NetnsError(f"ray start on {self.net.host(i)} exited ({node.returncode}):\n{tail}")

    def _wait_port(self, i: int, port: int, timeout: float) -> None:
        probe = (f"import socket,sys; s=socket.socket(); s.settimeout(1); "
                 f"sys.exit(s.connect_ex(({self.net.addr(i)!r},{port})))")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if in_ns(self.net.host(i), [sys.executable, "-c", probe], check=False).returncode == 0:
                return
            time.sleep(1)
        raise NetnsError(f"nothing listens on {self.net.addr(i)}:{port} after {timeout:.0f} s")

    def _wait_nodes(self, timeout: float) -> None:
        script = ("import ray, sys; ray.init(logging_level='ERROR'); "
                  f"sys.exit(0 if ray.cluster_resources().get({SLOT!r}, 0) >= {self.net.hosts} else 3)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if in_ns(self.net.host(0), [sys.executable, "-c", script], env=self.client_env(),
                     check=False).returncode == 0:
                return
            time.sleep(2)
        raise NetnsError(f"{self.net.hosts} Ray nodes did not join within {timeout:.0f} s; logs in {self.log_dir}")

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
        per_ip: dict[str, int] = {}
        for worker in workers:
            per_ip[worker["ip"]] = per_ip.get(worker["ip"], 0) + 1
        return {"workers": workers, "per_node": per_ip}

    def stop(self) -> None:
        # Workers before the head; SIGTERM makes `ray start --block` stop its daemons (a
        # worker node in about a second; the head's graceful stop takes ~30 s here, so it
        # is killed after a few: the whole cluster is going away, nothing is kept).
        for node in reversed(self.nodes):
            if node.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for node in reversed(self.nodes):
            try:
                node.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=10)
        self.nodes.clear()


def in_ns(ns: str, argv: list[str], *, env: dict | None = None, check: bool = True,
          timeout: float | None = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", "netns", "exec", ns, *argv], env=env or node_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
    if check and done.returncode != 0:
        raise NetnsError(f"in {ns}: `{shlex.join(argv)}` failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


# ---------------------------------------------------------------- one cluster, used and torn down

class Interrupted(BaseException):
    pass


@contextlib.contextmanager
def teardown_on_signals():
    """SIGINT/SIGTERM/SIGHUP raise inside the main thread, so `finally` blocks run."""
    def handler(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


@contextlib.contextmanager
def cluster(*, hosts: int, rate_bps: float | None, delay_ms: float = 0.0, subnet: str = "10.213.0",
            cpus_per_node: int | None = None, object_store_mb: int = 400, with_ray: bool = True,
            keep_logs: bool = False, say=print):
    """Network (and Ray) up; yields (Network, RayCluster | None); everything down after."""
    require_root()
    net = Network(hosts=hosts, rate_bps=rate_bps, delay_ms=delay_ms, subnet=subnet)
    log_dir = Path(tempfile.gettempdir()) / f"{PREFIX}{net.tag}"
    ray = None
    failed = True
    with teardown_on_signals():
        try:
            net.up()
            say(f"[netns] {net.describe()}")
            if with_ray:
                cpus = cpus_per_node or max(1, (os.cpu_count() or 2) // hosts)
                ray = RayCluster(net, cpus_per_node=cpus, object_store_mb=object_store_mb, log_dir=log_dir)
                started = time.monotonic()
                ray.start()
                say(f"[netns] Ray cluster up in {time.monotonic() - started:.0f} s: head {ray.gcs_address}, "
                    f"dashboard {ray.dashboard}, {hosts} nodes x {{CPU: {cpus}, {SLOT}: 1}}")
            yield net, ray
            failed = False
        finally:
            # Ignore further signals while tearing down: a second Ctrl-C must not leave debris.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            stopping = time.monotonic()
            if ray is not None:
                ray.stop()
            ray_stopped = time.monotonic()
            net.down()
            if failed and keep_logs and log_dir.exists():
                say(f"[netns] Ray logs kept in {log_dir} (`python -m launch.netns cleanup` removes them)")
            else:
                shutil.rmtree(log_dir, ignore_errors=True)
            say(f"[netns] torn down ({PREFIX}{net.tag}-*): Ray stopped in {ray_stopped - stopping:.1f} s, "
                f"network removed in {time.monotonic() - ray_stopped:.1f} s")


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetnsError("network namespaces need root (ip netns add)")
    if shutil.which("ip") is None or shutil.which("tc") is None:
        raise NetnsError("iproute2 (`ip`, `tc`) is not installed")


# ---------------------------------------------------------------- measuring a link

_SINK = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept(); total = 0
while True:
    chunk = conn.recv(1 << 20)
    if not chunk: break
    total += len(chunk)
conn.sendall(str(total).encode()); conn.close()
"""
_SOURCE = r"""
import socket, sys, time
host, port, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = b"\0" * (1 << 20); conn = socket.create_connection((host, port)); start = time.perf_counter(); sent = 0
while sent < nbytes:
    conn.sendall(block); sent += len(block)
conn.shutdown(socket.SHUT_WR); got = int(conn.recv(64)); elapsed = time.perf_counter() - start
print(f"{got} {elapsed}")
"""


def probe_link(net: Network, src: int, dst: int, mbytes: int = 50, port: int = 5201) -> float:
    """TCP throughput from host src to host dst, in bits/s (one stream, Python sockets)."""
    sink = subprocess.Popen(["ip", "netns", "exec", net.host(dst), sys.executable, "-c", _SINK,
                             net.addr(dst), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout.readline().strip() == "ready"
        out = in_ns(net.host(src), [sys.executable, "-c", _SOURCE, net.addr(dst), str(port),
                                    str(mbytes * 1024 * 1024)]).stdout.split()
        got, elapsed = int(out[0]), float(out[1])
        return got * 8 / elapsed
    finally:
        sink.wait(timeout=30)


# ---------------------------------------------------------------- command line

def run_in_head(ray: RayCluster, argv: list[str], *, timeout: float | None) -> int:
    """Run argv in host 0 (cwd: the repository), streaming its output; returns its status."""
    print(f"[netns] in {ray.net.host(0)}: {shlex.join(argv)}", flush=True)
    child = subprocess.Popen(["ip", "netns", "exec", ray.net.host(0), *argv], env=ray.client_env(), cwd=REPO,
                             start_new_session=True)
    try:
        return child.wait(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        raise


def spec_command(args, ray: RayCluster) -> list[str]:
    overrides = list(args.overrides)
    if args.one_per_node and not any(o.startswith("distributed.resources_per_worker") for o in overrides):
        overrides.append(f"distributed.resources_per_worker={{CPU: 1, {SLOT}: 1}}")
    sets = [a for o in overrides for a in ("--set", o)]
    if args.driver:  # the job's driver runs in host 0 directly
        return [sys.executable, "-m", "launch", "run", args.spec, *sets]
    return [str(BIN / "ray"), "job", "submit", "--address", ray.dashboard, "--working-dir", ".", "--",
            "python", "-m", "launch", "run", args.spec, *sets]


def add_network_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hosts", type=int, default=2, help="namespace hosts, one Ray node each (default 2)")
    parser.add_argument("--rate", type=parse_rate, default=parse_rate("1gbit"),
                        help="link speed each way, e.g. 100mbit, 1gbit, 10gbit (default 1gbit)")
    parser.add_argument("--unshaped", action="store_true", help="no tbf on the links")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="one-way delay per link end via netem (needs CONFIG_NET_SCH_NETEM)")
    parser.add_argument("--subnet", default="10.213.0", help="/24 prefix used inside the namespaces (default 10.213.0)")


def add_ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpus-per-node", type=int, default=None,
                        help="Ray CPUs per node (default: machine cores / hosts, at least 1)")
    parser.add_argument("--object-store-mb", type=int, default=400, help="object store per node (default 400)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the nodes' Ray logs after a failure")
    parser.add_argument("--placement-json", default=None,
                        help="write where Ray ran each Ray Train worker, and each host's link bytes, to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launch.netns", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="cluster up, run a command or a spec in host 0, tear down")
    add_network_args(run)
    add_ray_args(run)
    run.add_argument("--spec", default=None, help="a sparsepop job spec (run with `ray job submit` in host 0)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="spec override (repeatable), as in `python -m launch run`")
    run.add_argument("--driver", action="store_true",
                     help="run `python -m launch run` in host 0 directly instead of `ray job submit`")
    run.add_argument("--no-one-per-node", dest="one_per_node", action="store_false",
                     help=f"do not add distributed.resources_per_worker={{CPU: 1, {SLOT}: 1}} to the spec")
    run.add_argument("--timeout", type=float, default=None, help="seconds before the command is stopped")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND ... (run in host 0, cwd: the repository)")
    up = commands.add_parser("up", help="cluster up until Ctrl-C / SIGTERM, then tear down")
    add_network_args(up)
    add_ray_args(up)
    probe = commands.add_parser("probe", help="network only: TCP throughput host 1 -> host 0 and back")
    add_network_args(probe)
    probe.add_argument("--mbytes", type=int, default=100, help="megabytes sent each way (default 100)")
    commands.add_parser("cleanup", help=f"remove every {PREFIX}* namespace, its processes, and Ray temp dirs")
    commands.add_parser("down", help="same as cleanup")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("cleanup", "down"):
        require_root()
        return cleanup()
    rate = None if args.unshaped else args.rate
    opts = dict(hosts=args.hosts, rate_bps=rate, delay_ms=args.delay_ms, subnet=args.subnet)
    try:
        if args.command == "probe":
            with cluster(**opts, with_ray=False) as (net, _):
                for src, dst in ((1, 0), (0, 1)):
                    bps = probe_link(net, src, dst, args.mbytes)
                    print(f"{net.addr(src)} -> {net.addr(dst)}: {bps / 1e9:.3f} Gbit/s "
                          f"({args.mbytes} MB, one TCP stream)")
            return 0
        ray_opts = dict(cpus_per_node=args.cpus_per_node, object_store_mb=args.object_store_mb,
                        keep_logs=args.keep_logs)
        with cluster(**opts, **ray_opts) as (net, ray):
            if args.command == "up":
                print(f"[netns] up; from another shell: ip netns exec {net.host(0)} env RAY_AUTH_MODE=token "
                      f"RAY_ADDRESS={ray.gcs_address} GLOO_SOCKET_IFNAME={HOST_IF} COMMAND; "
                      "Ctrl-C tears it down", flush=True)
                while True:  # short sleeps: a signal is handled within a second
                    time.sleep(1)
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if bool(command) == bool(args.spec):
                raise NetnsError("give either --spec SPEC or -- COMMAND")
            if args.spec:
                command = spec_command(args, ray)
            before = net.counters()
            status = run_in_head(ray, command, timeout=args.timeout)
            after = net.counters()
            traffic = {ip: {k: after[ip][k] - before[ip][k] for k in after[ip]} for ip in after}
            placement = ray.placement()
            for ip, moved in traffic.items():
                print(f"[netns] {ip}: sent {moved['tx_bytes'] / 1e6:,.1f} MB, received "
                      f"{moved['rx_bytes'] / 1e6:,.1f} MB over {HOST_IF}")
            if "per_node" in placement and placement["workers"]:
                print("[netns] Ray Train workers per node: "
                      + ", ".join(f"{ip}: {n}" for ip, n in sorted(placement["per_node"].items())))
            if args.placement_json:
                Path(args.placement_json).write_text(json.dumps(
                    {"placement": placement, "traffic": traffic, "status": status}, indent=2) + "\n")
            print(f"[netns] command exited with status {status}", flush=True)
            return status
    except NetnsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Interrupted as sig:
        print(f"[netns] interrupted ({sig}); torn down", file=sys.stderr)
        return 130
    except subprocess.TimeoutExpired:
        print("[netns] command timed out; torn down", file=sys.stderr)
        return 124


if __name__ == "__main__":
    sys.exit(main())
