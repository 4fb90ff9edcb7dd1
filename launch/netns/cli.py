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
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from launch.netns.network import (BIN, HOST_IF, PREFIX, REPO, SLOT, NetnsError, Network, cleanup, parse_rate,
                                  require_root, signal_group)
from launch.netns.ray_cluster import RayCluster, in_ns

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
        signal_group(child, signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            signal_group(child, signal.SIGKILL)
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


