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

GREY_LEVELS = 256


def pixels_to_tokens(images: np.ndarray) -> torch.Tensor:
    """``[B, H, W]`` or ``[B, H, W, C]`` uint8 -> ``[B, H·W]`` int64 grey levels; channels
    are averaged (rounded), so colour images keep one token per pixel."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = np.rint(images.mean(-1))
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.int64))


class ImageData:
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

    @staticmethod
    def _shard(n: int, rank: int, world_size: int) -> np.ndarray:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        return np.arange(rank, n, world_size)

    def train_batch(self, *, rank: int, world_size: int, member: int, step: int,
                    batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``pixels [B, H·W]``, ``labels [B]`` (int64) of one member at one step."""
        images, labels = self.splits["train"]
        shard = self._shard(len(labels), rank, world_size)
        if len(shard) == 0:
            raise ValueError(f"rank {rank} has no training images; have more than {world_size}")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, rank, member, step])))
        # Sorted: memory-mapped files read forward; the order inside a batch does not matter.
        idx = np.sort(shard[rng.choice(len(shard), size=batch_size, replace=batch_size > len(shard))])
        return pixels_to_tokens(images[idx]), torch.from_numpy(np.asarray(labels[idx], dtype=np.int64))

    def train_batches(self, *, rank: int, world_size: int, members: int, step: int,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's `train_batch` at once: ``tokens [P, B, H·W]``, ``labels [P, B]``
        (member by member: each reads its own sorted rows of a possibly memory-mapped file)."""
        batches = [self.train_batch(rank=rank, world_size=world_size, member=member, step=step, batch_size=batch_size)
                   for member in range(members)]
        return torch.stack([tokens for tokens, _ in batches]), torch.stack([labels for _, labels in batches])

    def _eval_batches(self, split: str, rank: int, world_size: int, batch_size: int, max_batches: int | None):
        images, labels = self.splits[split]
        shard = self._shard(len(labels), rank, world_size)
        # Fixed order; the last batch may be short and ranks may differ by one batch.
        batches = [shard[i:i + batch_size] for i in range(0, len(shard), batch_size)][:max_batches]
        return [(pixels_to_tokens(images[b]), torch.from_numpy(np.asarray(labels[b], dtype=np.int64)))
                for b in batches]

    def val_batches(self, *, rank: int, world_size: int, batch_size: int, max_batches: int | None = None):
        """This rank's validation shard in fixed order: ``[(tokens [B, H·W], labels [B]), ...]``."""
        return self._eval_batches("val", rank, world_size, batch_size, max_batches)

    def test_batches(self, *, rank: int, world_size: int, batch_size: int, max_batches: int | None = None):
        return self._eval_batches("test", rank, world_size, batch_size, max_batches)
