"""A stale JIT-build lock must not hang every later DeepSpeed job.

DeepSpeed builds a small C++ op on first use (on CPU, `deepspeed_shm_comm`) through
`torch.utils.cpp_extension.load`, which serialises builds with a lock file
(`<extensions dir>/<op>/lock`, torch's FileBaton): the builder creates it and holds it
open until the build ends; everyone else polls until it is gone, without a time limit.
A build killed midway leaves the file behind, and every later job then waits forever.

`clear_stale_build_locks` runs before DeepSpeed starts. A lock that a process on this
machine holds open is a build in progress: torch waits for it as usual. A lock nobody here
holds is a build killed midway, removed at once (with a warning naming it), unless the
cache lives on a network filesystem: there a build on another machine may hold it, so it
is removed only once nothing in its build directory has changed for `SHARED_STALE_AFTER_S`
(a running build writes its objects there), after a bounded wait that says what it waits for.
"""
import fcntl
import os
import sys
import time
from pathlib import Path

# Longer than a build of DeepSpeed's CPU op takes on a loaded 2-core machine.
SHARED_STALE_AFTER_S = 300.0
# Filesystems other machines may write to (the fstype column of /proc/self/mounts).
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "beegfs", "glusterfs",
                       "fuse.sshfs", "9p", "afs", "wekafs")


def extensions_root() -> Path:
    """Where torch builds extensions: TORCH_EXTENSIONS_DIR, or its per-user cache
    (`~/.cache/torch_extensions`, under which torch adds a `py311_cpu`-style folder)."""
    explicit = os.environ.get("TORCH_EXTENSIONS_DIR")
    if explicit:
        return Path(explicit)
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def clear_stale_build_locks(root: Path | None = None, *, stale_after_s: float | None = None,
                            poll_s: float = 1.0) -> list[Path]:
    """Remove every stale build lock under `root` (default `extensions_root()`) and return
    them; returns at once when there is none (the usual case). `stale_after_s`: how long an
    unheld lock's build directory must be idle (default: 0 on a local filesystem,
    SHARED_STALE_AFTER_S on a network one)."""
    root = extensions_root() if root is None else root
    # <root>/<op>/lock with TORCH_EXTENSIONS_DIR, <root>/py311_cpu/<op>/lock without.
    locks = [*root.glob("*/lock"), *root.glob("*/*/lock")]
    if stale_after_s is None and locks:
        stale_after_s = SHARED_STALE_AFTER_S if on_network_filesystem(root) else 0.0
    return [lock for lock in locks if _clear_if_stale(lock, stale_after_s=stale_after_s, poll_s=poll_s)]


def _clear_if_stale(lock: Path, *, stale_after_s: float, poll_s: float) -> bool:
    announced = False
    while True:
        # Serialise with the other workers of this machine: two of them removing "the" stale
        # lock could otherwise remove the fresh one the first has just taken (and build twice).
        with _exclusive(lock.parent):
            if not lock.exists() or holders(lock):
                return False  # gone, or a build in progress that torch will wait for
            idle_s = time.time() - _last_change(lock.parent)
            if idle_s >= stale_after_s:
                lock.unlink(missing_ok=True)
                print(f"warning: removed the stale build lock {lock}: no process holds it (a build killed "
                      "midway leaves it); the build starts again", file=sys.stderr, flush=True)
                return True
        if not announced:
            print(f"waiting up to {stale_after_s - idle_s:.0f} s for the build lock {lock}: no process on this "
                  "machine holds it. Unless a build runs on another machine sharing this cache, a killed build "
                  f"left it: `rm {lock}` ends the wait.", file=sys.stderr, flush=True)
            announced = True
        time.sleep(min(poll_s, stale_after_s - idle_s))


class _exclusive:
    """An exclusive flock on a directory, for a check-and-remove no other guard interleaves."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self):
        self.fd = os.open(self.folder, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the flock


def holders(lock: Path) -> list[int]:
    """The processes on this machine (that we may inspect) with `lock` open: torch's
    FileBaton keeps its file descriptor open for the whole build."""
    target = os.path.realpath(lock)
    pids = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == target for fd in fd_dir.iterdir()):
                pids.append(int(fd_dir.parent.name))
        except OSError:  # gone meanwhile, or another user's process
            continue
    return pids


def on_network_filesystem(path: Path) -> bool:
    """Whether `path` is on a filesystem other machines may share (its mount's fstype)."""
    path = os.path.realpath(path)
    best, fstype = "", ""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return True  # cannot tell: the cautious answer
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, fstype = point, fields[2]
    return fstype.startswith(NETWORK_FILESYSTEMS)


def _last_change(folder: Path) -> float:
    """The newest modification time in a build directory (a running build writes there)."""
    times = [folder.stat().st_mtime]
    for entry in folder.iterdir():
        try:
            times.append(entry.stat().st_mtime)
        except OSError:
            continue
    return max(times)
