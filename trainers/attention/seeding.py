"""Randomness that every data-parallel worker reproduces exactly.

Random-feature kernels (Performer's projection, LARA's proposal samples) draw from a
private CPU torch.Generator seeded by a key such as (seed, layer, count), never from the
global RNG: a per-rank or global-RNG draw would give each worker a different model (or
shift the dropout stream of everything after it), silently breaking data parallelism.
"""
import torch
from torch import nn

from compression import seeded_generator  # noqa: F401 - the one recipe, shared with the compressors


class TrainingCalls(nn.Module):
    """Counts a module's training-mode forward passes (micro-batches).

    The count is a buffer, so checkpoints carry it and a resumed run continues the same
    random schedule. A Python copy answers `tick()` without reading the buffer, which on
    an accelerator would synchronize every layer every step; it is refreshed whenever a
    state dict is loaded (a resume, or a Ray Tune exploit that loads a checkpoint).
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._count: int | None = None
        self.register_load_state_dict_post_hook(_forget_count)

    def tick(self) -> int:
        """Index of this training call (0, 1, 2, ...), and count it."""
        if self._count is None:
            self._count = int(self.count)
        index = self._count
        self._count += 1
        self.count.fill_(self._count)
        return index


def _forget_count(module: TrainingCalls, _incompatible_keys) -> None:
    module._count = None  # a module-level function, not a lambda, so the module still pickles
