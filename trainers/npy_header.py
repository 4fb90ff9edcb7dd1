"""The header of a .npy file (shape and dtype) without reading its data or unpickling."""
from pathlib import Path

import numpy as np


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a .npy file; ValueError if it is not one, OSError if unreadable."""
    with Path(path).open("rb") as handle:
        major, _ = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    return shape, dtype
