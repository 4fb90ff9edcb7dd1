"""`make image-example`: the two .npy files configs/image_file_example.yaml trains on.

    python -m launch.image_example [OUT_DIR]     (default data/image_file_example)

A toy set made for the `image_file` task, in the format a user's own images take: colour
images uint8 [N, 32, 32, 3] (averaged to grey by the task) and int64 labels [N]. Each image
holds one shape, a filled square (0), a ring (1) or a plus sign (2), of a random size,
brightness and place on a noisy background; the label is the shape. Drawn from a fixed
seed, so every machine writes the same files.
"""
import sys
from pathlib import Path

import numpy as np

from launch.runs.files import write_atomic_with

SIZE, COUNT, SEED = 32, 3000, 0
SHAPES = ("square", "ring", "plus")


def shape_images(count: int, *, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(images [count, size, size, 3] uint8, labels [count] int64), classes in turn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(SHAPES)
    rng.shuffle(labels)
    y, x = np.mgrid[:size, :size]
    images = rng.integers(0, 60, (count, size, size, 3))  # dim noise, different per channel
    for image, label in zip(images, labels):
        radius = int(rng.integers(4, size // 4 + 1))
        cy, cx = rng.integers(radius, size - radius, 2)
        dy, dx = np.abs(y - cy), np.abs(x - cx)
        mask = [np.maximum(dy, dx) <= radius,                               # square
                np.abs(np.hypot(dy, dx) - radius) <= 1.0,                   # ring
                (np.minimum(dy, dx) <= 1) & (np.maximum(dy, dx) <= radius)  # plus
                ][label]
        image[mask] = rng.integers(160, 256, 3)  # one colour per shape
    return images.astype(np.uint8), labels.astype(np.int64)


def write_example(out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    images, labels = shape_images(COUNT, seed=SEED)
    paths = out / "images.npy", out / "labels.npy"
    for path, array in zip(paths, (images, labels)):
        # Through an open file: np.save would append ".npy" to the temporary name.
        write_atomic_with(path, lambda tmp, array=array: _save(tmp, array))
    return paths


def _save(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python -m launch.image_example [OUT_DIR]", file=sys.stderr)
        return 2
    images, labels = write_example(Path(argv[0] if argv else "data/image_file_example"))
    print(f"wrote {images} ({COUNT} images, {SIZE}x{SIZE}x3 uint8) and {labels} ({len(SHAPES)} classes: "
          f"{', '.join(SHAPES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
