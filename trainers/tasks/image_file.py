"""The image_file task: a user's images and labels as two .npy files (see ImageFileTask)."""
from pathlib import Path

import numpy as np

from trainers.npy_header import npy_header
from trainers.tasks.images import ImageData
from trainers.tasks.splits import tail_split


def image_file_problems(path: Path, labels_path: Path) -> list[tuple[str, str]]:
    """(spec key, message) for what is wrong with the two files, checked before any work
    starts; empty if they are fine."""
    images = _npy_problem(path, "image")
    if images is None:
        shape, dtype = npy_header(path)
        if dtype != np.uint8:
            images = f"{path} holds {dtype} values; images must be uint8 (grey levels 0..255)"
        elif len(shape) not in (3, 4):
            images = f"{path} has shape {shape}; images must be [N, H, W] or [N, H, W, C]"
    labels = _npy_problem(labels_path, "labels")
    if labels is None:
        shape, dtype = npy_header(labels_path)
        if dtype.kind not in "iu":
            labels = f"{labels_path} holds {dtype} values; labels must be integers"
        elif len(shape) != 1:
            labels = f"{labels_path} has shape {shape}; labels must be one integer per image, shape [N]"
        elif images is None and shape[0] != npy_header(path)[0][0]:
            labels = f"{labels_path} holds {shape[0]} labels for the {npy_header(path)[0][0]} images of {path}"
        elif (smallest := int(np.load(labels_path, allow_pickle=False).min(initial=0))) < 0:
            labels = f"{labels_path} holds label {smallest}; labels must be classes 0..K-1"
    return [(key, message) for key, message in (("task.path", images), ("task.labels_path", labels)) if message]


def _npy_problem(path: Path, what: str) -> str | None:
    if not path.is_file():
        return f"{what} file not found: {path}"
    try:
        _, dtype = npy_header(path)
        if dtype.hasobject:
            return f"{path} holds object values (pickled Python objects), which are never loaded"
        np.load(path, mmap_mode="r", allow_pickle=False)  # also refuses a truncated file
    except ValueError as err:
        return f"{path} is not a readable .npy array ({err})"
    return None


def load_image_file(path: Path, labels_path: Path, *, val_fraction: float, seed: int,
                    patch_size: int = 1) -> ImageData:
    """The images memory-mapped, split into train and validation (the tail) as token_file is."""
    images = np.load(path, mmap_mode="r", allow_pickle=False)
    labels = np.load(labels_path, allow_pickle=False).astype(np.int64)
    split, _ = tail_split(len(labels), val_fraction)
    if not 0 < split < len(labels):
        raise ValueError(f"{len(labels)} images leave an empty split at val_fraction {val_fraction}")
    return ImageData({"train": (images[:split], labels[:split]), "val": (images[split:], labels[split:])},
                     num_classes=int(labels.max()) + 1, seed=seed, patch_size=patch_size)
