"""What the classification tasks (ListOps, images) share: a worker's shard of a split, a
member's seeded training rows, and the evaluation batches in fixed order.

A subclass sets `seed` and says where a split is and how its rows become a batch:
`_split(name)` -> (inputs, labels), `_batch(inputs, labels, rows)` -> (tokens, labels int64).
"""
import numpy as np


class ClassificationData:
    seed: int

    @staticmethod
    def _shard(n: int, rank: int, world_size: int) -> np.ndarray:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        return np.arange(rank, n, world_size)  # worker `rank` owns examples i % W == rank

    def _train_rows(self, rank: int, world_size: int, member: int, step: int, batch_size: int) -> np.ndarray:
        """One member's training rows at one step. Stateless: they depend only on (seed,
        rank, member, step), so a restored or exploited member recomputes any step's batch
        without saved sampler state. Distinct within a batch, independent across steps."""
        shard = self._shard(len(self._split("train")[1]), rank, world_size)
        if len(shard) == 0:
            raise ValueError(f"rank {rank} has no training examples; have more than {world_size} of them")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, rank, member, step])))
        return shard[rng.choice(len(shard), size=batch_size, replace=batch_size > len(shard))]

    def _eval_batches(self, split: str, rank: int, world_size: int, batch_size: int, max_batches: int | None):
        inputs, labels = self._split(split)
        shard = self._shard(len(labels), rank, world_size)
        # Fixed order; the last batch may be short and ranks may differ by one batch, so
        # run no per-batch collectives over these.
        starts = range(0, len(shard), batch_size)[:max_batches]
        return [self._batch(inputs, labels, shard[i:i + batch_size]) for i in starts]

    def val_batches(self, *, rank: int, world_size: int, batch_size: int, max_batches: int | None = None):
        """This rank's validation shard in fixed order: ``[(tokens [B, T], labels [B]), ...]``."""
        return self._eval_batches("val", rank, world_size, batch_size, max_batches)

    def test_batches(self, *, rank: int, world_size: int, batch_size: int, max_batches: int | None = None):
        return self._eval_batches("test", rank, world_size, batch_size, max_batches)
