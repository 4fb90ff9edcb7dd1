"""Checkpoint files: written atomically (temp file, fsync, rename), read with
`torch.load(weights_only=True)` so a checkpoint can never execute code."""
import os
from pathlib import Path

import torch


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)
