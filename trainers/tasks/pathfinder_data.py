"""The pathfinder task's splits: generated from the seed (trainers/tasks/pathfinder.py),
cached (trainers/tasks/cache.py)."""
import numpy as np

from trainers.tasks import pathfinder
from trainers.tasks.cache import cached_arrays
from trainers.tasks.images import ImageData

# Part of every cache key: bump it whenever the generator draws different images.
GENERATOR_VERSION = 1


def pathfinder_split(n: int, *, seed: int, size: int, contour_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(images [n, size, size] uint8, labels [n] int64), from the cache when present."""
    params = {"version": GENERATOR_VERSION, "n": n, "seed": seed, "size": size, "contour_length": contour_length}

    def make() -> dict[str, np.ndarray]:
        images, labels, _ = pathfinder.generate(n, seed=seed, size=size, contour_length=contour_length)
        return {"images": images, "labels": labels}

    arrays = cached_arrays("pathfinder", params, make)
    return arrays["images"], arrays["labels"]


def pathfinder_data(*, size: int, difficulty: str, num_train: int, num_val: int, num_test: int,
                    seed: int, patch_size: int = 1) -> ImageData:
    """Train, validation and test sets from distinct child seeds of ``seed`` (images of
    different splits coincide with negligible probability, so no set is deduplicated)."""
    contour_length = pathfinder.DIFFICULTIES[difficulty]
    children = [int(c.generate_state(1, np.uint64)[0]) for c in np.random.SeedSequence(seed).spawn(3)]
    splits = {name: pathfinder_split(n, seed=child, size=size, contour_length=contour_length)
              for name, n, child in (("train", num_train, children[0]), ("val", num_val, children[1]),
                                     ("test", num_test, children[2]))}
    return ImageData(splits, num_classes=2, seed=seed, patch_size=patch_size)
