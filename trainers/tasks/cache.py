"""A cache of generated data sets under $XDG_CACHE_HOME/sparsepop (default ~/.cache/sparsepop).

Each entry is one .npz of plain arrays named by a hash of everything that determines it
(the generator's version and parameters), written atomically (a temporary file in the same
folder, then a rename), so concurrent workers generating the same set never read half a
file, and read back without pickle.
"""
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparsepop"


def cached_arrays(name: str, params: dict, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays ``make()`` returns for ``params``, from the cache when present."""
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / name / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            return {k: stored[k] for k in stored.files}
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        try:
            np.savez(handle, **arrays)
        except BaseException:
            os.unlink(handle.name)
            raise
    os.replace(handle.name, path)
    return arrays
