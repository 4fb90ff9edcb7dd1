"""The namespaces, links and shaping of a namespace cluster (see launch/netns/cli.py)."""
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
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOST_IF = "sp0"  # the host's interface, the same name in every namespace (GLOO_SOCKET_IFNAME)
GCS_PORT, DASHBOARD_PORT = 6379, 8265
SLOT = "node_slot"  # custom resource: one per node
ETC_NETNS = Path("/etc/netns")  # per-namespace /etc files, see Network._write_etc


class NetnsError(RuntimeError):
    pass


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetnsError(f"`{shlex.join(args)}` failed ({done.returncode}): {(done.stderr or '').strip()}")
    return done


def parse_rate(text: str) -> float:
    """'100mbit', '1gbit', '10gbit', '2.5gbit' -> bits per second."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(k|m|g)?bit\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give a rate like 100mbit, 1gbit, 10gbit")
    return float(match.group(1)) * {None: 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2)]


def ns_names() -> list[str]:
    out = sh("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(PREFIX)]


def signal_group(process: subprocess.Popen, sig: int) -> None:
    """`sig` to the process group that `process` leads (started with start_new_session), if
    it still exists."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


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
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
    with contextlib.suppress(OSError):
        ETC_NETNS.rmdir()  # only if empty: other tools' namespaces may keep files there


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


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetnsError("network namespaces need root (ip netns add)")
    if shutil.which("ip") is None or shutil.which("tc") is None:
        raise NetnsError("iproute2 (`ip`, `tc`) is not installed")
