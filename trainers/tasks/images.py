"""Image classification data: one id per pixel (its grey level, 0..255), read row by row,
so a [H, W] image is a sequence of H·W ids. With `patch_size` p the model makes each p × p
patch one token (trainers/patches.py): the token grid is (H/p, W/p), and the ids stay
pixels, so batches look the same either way.

Batches follow ListOps (trainers/tasks/listops.py): worker `rank` owns the examples
i % world_size == rank, and the examples of (member, step) come from a generator seeded
by (seed, rank, member, step), so a restarted or exploited member recomputes any batch.
"""
import numpy as np
import torch

from trainers.tasks.classification import ClassificationData

GREY_LEVELS = 256


def pixels_to_tokens(images: np.ndarray) -> torch.Tensor:
    """``[B, H, W]`` or ``[B, H, W, C]`` uint8 -> ``[B, H·W]`` int64 grey levels; channels
    are averaged (rounded), so colour images keep one token per pixel."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = np.rint(images.mean(-1))
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.int64))


class ImageData(ClassificationData):
    """Train/validation(/test) splits of uint8 images (arrays or memory maps) and int labels."""

    vocab_size = GREY_LEVELS
    pad_id = None  # every image fills its grid
    causal = False  # classification: attention sees the whole image

    def __init__(self, splits: dict[str, tuple[np.ndarray, np.ndarray]], *, num_classes: int, seed: int,
                 patch_size: int = 1):
        """``splits``: name ("train", "val", optionally "test") -> (images, labels)."""
        self.splits, self.num_classes, self.seed, self.patch_size = splits, num_classes, seed, patch_size
        height, width = int(splits["train"][0].shape[1]), int(splits["train"][0].shape[2])
        if height % patch_size or width % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide the {height}x{width} images")
        self.grid = (height // patch_size, width // patch_size)  # of tokens
        self.seq_len = self.grid[0] * self.grid[1]

    def train_batch(self, *, rank: int, world_size: int, member: int, step: int,
                    batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``pixels [B, H·W]``, ``labels [B]`` (int64) of one member at one step."""
        # Sorted: memory-mapped files read forward; the order inside a batch does not matter.
        rows = np.sort(self._train_rows(rank, world_size, member, step, batch_size))
        return self._batch(*self.splits["train"], rows)

    def train_batches(self, *, rank: int, world_size: int, members: int, step: int,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's `train_batch` at once: ``tokens [P, B, H·W]``, ``labels [P, B]``
        (member by member: each reads its own sorted rows of a possibly memory-mapped file)."""
        batches = [self.train_batch(rank=rank, world_size=world_size, member=member, step=step, batch_size=batch_size)
                   for member in range(members)]
        return torch.stack([tokens for tokens, _ in batches]), torch.stack([labels for _, labels in batches])

    def _split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.splits[name]

    @staticmethod
    def _batch(images: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return pixels_to_tokens(images[rows]), torch.from_numpy(np.asarray(labels[rows], dtype=np.int64))
