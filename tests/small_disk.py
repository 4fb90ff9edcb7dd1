"""A small tmpfs for full-disk tests (root only: it mounts one): `fill()` takes all the
free space that is left, so the next write fails with ENOSPC."""
import contextlib
import errno
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class SmallDisk:
    path: Path

    def fill(self) -> None:
        with open(self.path / "filler", "ab", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 4096)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err

    def free(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(parent: Path, size: str):
    """A tmpfs of `size` ("256k", "64m") under `parent`, unmounted afterwards; skips the
    test when not root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = Path(parent) / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)
