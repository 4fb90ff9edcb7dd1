"""The TCP sockets a process tree listens on, read from /proc as `ss -ltnp` reads them
(no dependency on iproute2): for the tests that nothing of a job listens beyond the machine."""
import ipaddress
import os
import subprocess
import threading
import time
from pathlib import Path

LISTEN = "0A"  # the state column of /proc/net/tcp*


def process_tree(root: int) -> set[int]:
    """`root` and every process descended from it, now."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


def listeners(pids: set[int]) -> list[tuple[str, int, int, str]]:
    """(address, port, pid, command) of every listening TCP socket the processes hold."""
    owner = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    owner[int(link[8:-1])] = pid
        except OSError:  # ended meanwhile
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == LISTEN and inode in owner:
                address, port = local.split(":")
                pid = owner[inode]
                found.append((_address(address), int(port, 16), pid, _command(pid)))
    return found


def is_wildcard(address: str) -> bool:
    return ipaddress.ip_address(address).is_unspecified


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # [::ffff:127.0.0.1], as Ray's gRPC servers bind
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def _address(hex_address: str) -> str:
    # The kernel prints each 32-bit word of the address in host (little-endian) order.
    words = [bytes.fromhex(hex_address[i:i + 8])[::-1] for i in range(0, len(hex_address), 8)]
    return str(ipaddress.ip_address(b"".join(words)))


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def run_watching_listeners(args: list[str], *, also: tuple[int, ...] = (), poll_s: float = 0.2, timeout: float = 600,
                           **popen) -> tuple[subprocess.CompletedProcess, set[tuple[str, int, int, str]]]:
    """Run `args` to its end, noting every TCP listener its process tree (and the trees of
    the processes `also`) holds meanwhile."""
    seen: set[tuple[str, int, int, str]] = set()
    deadline = time.monotonic() + timeout
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen) as proc:
        # Read the pipes on threads, or a chatty job blocks on a full pipe while we poll.
        out = {}
        readers = [threading.Thread(target=lambda name, pipe: out.__setitem__(name, pipe.read()),
                                    args=(name, pipe)) for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))]
        for reader in readers:
            reader.start()
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise subprocess.TimeoutExpired(args, timeout)
            seen.update(listeners(set().union(*(process_tree(pid) for pid in (proc.pid, *also)))))
            time.sleep(poll_s)
        for reader in readers:
            reader.join()
    return subprocess.CompletedProcess(args, proc.returncode, out["stdout"], out["stderr"]), seen
