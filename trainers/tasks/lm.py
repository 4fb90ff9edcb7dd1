"""Language-modelling data: the stdlib-code corpus and a user's token file.

Sharding: the training stream is cut into `world_size` contiguous shards and worker
`rank` samples windows only inside its own shard, so workers see disjoint data.
Order: the windows of (member, step) come from a generator seeded by
(seed, rank, member, step), so every member has its own data order and any step's batch
can be recomputed after a restart without saving loader state.
"""
import functools
import os
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import torch

# Test suites and vendored packages are not "the standard library's own source".
_SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test"}
_SEPARATOR = b"\n\n"


def stdlib_source_files() -> list[Path]:
    """The interpreter's standard-library .py files, in a deterministic order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in _SKIPPED_DIRS]  # not walked at all
        files += [Path(folder, name) for name in names if name.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _stdlib_split(val_fraction: float) -> tuple[list[Path], list[Path]]:
    """(train files, validation files): by a stable hash of the relative path, so no file
    contributes to both."""
    root = Path(sysconfig.get_paths()["stdlib"])
    train, val = [], []
    for path in stdlib_source_files():
        bucket = zlib.crc32(path.relative_to(root).as_posix().encode()) % 10_000
        (val if bucket < val_fraction * 10_000 else train).append(path)
    return train, val


def stdlib_corpus(val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) byte streams: each split's files joined by a blank line."""
    return tuple(np.frombuffer(_SEPARATOR.join(p.read_bytes() for p in files), dtype=np.uint8)
                 for files in _stdlib_split(val_fraction))


@functools.lru_cache
def stdlib_corpus_lengths(val_fraction: float) -> tuple[int, int]:
    """The lengths of `stdlib_corpus`'s streams, from the files' sizes (nothing read)."""
    return tuple(sum(p.stat().st_size for p in files) + len(_SEPARATOR) * max(len(files) - 1, 0)
                 for files in _stdlib_split(val_fraction))


def split_problem(name: str, tokens: int, *, seq_len: int, workers: int) -> str | None:
    """Why a split of `tokens` tokens cannot be cut into `workers` shards of at least two
    windows of seq_len + 1 tokens each (what LMData samples from), or None."""
    need = 2 * (seq_len + 1)
    if tokens // workers >= need:
        return None
    shards = f"each of {workers} workers' shards" if workers > 1 else "it"
    return (f"the {name} split has {tokens:,} tokens; {shards} needs at least 2 × (seq_len + 1) = {need:,}")


def token_file_problem(path: Path, dtype: str, vocab_size: int) -> str | None:
    """What is wrong with a token file, checked before any work starts (None if fine)."""
    if not path.is_file():
        return f"token file not found: {path}"
    if path.stat().st_size == 0:
        return f"{path} is empty; a token file holds the ids of the text to train on"
    if path.suffix == ".npy":
        with path.open("rb") as handle:
            try:
                major, _ = np.lib.format.read_magic(handle)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                _, _, file_dtype = read_header(handle)
            except ValueError as err:
                return f"{path} is not a readable .npy file ({err})"
        if file_dtype.kind != "u":
            return f"{path} holds {file_dtype} values; token ids must be an unsigned integer array (uint16/uint32)"
    elif path.stat().st_size % np.dtype(dtype).itemsize:
        return f"{path} has {path.stat().st_size} bytes, not a whole number of {dtype} ids; check task.dtype"
    largest = int(load_token_file(path, dtype).max(initial=0))
    if largest >= vocab_size:
        return f"{path} holds token id {largest}, outside vocab_size {vocab_size}; raise task.vocab_size"
    return None


def load_token_file(path: Path, dtype: str) -> np.ndarray:
    """A .npy array (loaded without pickle) or a raw .bin of `dtype` ids, memory-mapped."""
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False).reshape(-1)
    return np.memmap(path, dtype=np.dtype(dtype), mode="r")


def member_generator(*keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in keys])))


class LMData:
    """Next-token prediction over a token stream: batches of (inputs [B, T], targets [B, T])."""

    num_classes = None
    pad_id = None
    causal = True
    grid = None  # a 1-D stream
    patch_size = 1  # one token per id

    def __init__(self, train: np.ndarray, val: np.ndarray, *, vocab_size: int, seq_len: int, seed: int):
        self.train, self.val = train, val
        self.vocab_size, self.seq_len, self.seed = vocab_size, seq_len, seed
        for name, stream in (("training", train), ("validation", val)):
            if problem := split_problem(name, len(stream), seq_len=seq_len, workers=1):
                raise ValueError(problem)

    def shard_bounds(self, stream: np.ndarray, rank: int, world_size: int) -> tuple[int, int]:
        size = len(stream) // world_size
        return rank * size, (rank + 1) * size

    def train_batch(self, *, rank: int, world_size: int, member: int, step: int, batch_size: int):
        return self._windows(self.train, self._train_offsets(rank, world_size, member, step, batch_size))

    def train_batches(self, *, rank: int, world_size: int, members: int, step: int, batch_size: int):
        """Every member's `train_batch` at once, as ([P, B, T], [P, B, T]): one gather from
        the stream instead of one per window (only the seeded draws go member by member)."""
        offsets_PB = np.stack([self._train_offsets(rank, world_size, member, step, batch_size)
                               for member in range(members)])
        return self._windows(self.train, offsets_PB)

    def _train_offsets(self, rank: int, world_size: int, member: int, step: int, batch_size: int) -> np.ndarray:
        start, stop = self.shard_bounds(self.train, rank, world_size)
        rng = member_generator(self.seed, rank, member, step)
        return start + rng.integers(0, stop - start - self.seq_len - 1, size=batch_size)

    def val_batches(self, *, rank: int, world_size: int, batch_size: int, max_batches: int):
        """Fixed windows spread evenly over this rank's validation shard (same every eval)."""
        start, stop = self.shard_bounds(self.val, rank, world_size)
        count = max(1, min(max_batches * batch_size, (stop - start) // (self.seq_len + 1)))
        offsets = np.linspace(start, stop - self.seq_len - 1, num=count).astype(np.int64)
        return [self._windows(self.val, offsets[i:i + batch_size]) for i in range(0, count, batch_size)]

    def _windows(self, stream: np.ndarray, offsets: np.ndarray):
        """(inputs, targets) of the windows starting at `offsets` (any shape: [B] or [P, B])."""
        positions = offsets[..., None] + np.arange(self.seq_len + 1)
        tokens = torch.from_numpy(np.asarray(stream[positions], dtype=np.int64))
        return tokens[..., :-1], tokens[..., 1:]

    def unigram_baseline(self) -> float:
        """Cross-entropy (nats/token) on validation of the training split's unigram
        distribution (add-one smoothed): the loss a model that ignores context gets."""
        counts = np.bincount(np.asarray(self.train), minlength=self.vocab_size).astype(np.float64) + 1.0
        log_prob = np.log(counts / counts.sum())
        val_counts = np.bincount(np.asarray(self.val), minlength=self.vocab_size)
        return float(-(val_counts * log_prob).sum() / val_counts.sum())
