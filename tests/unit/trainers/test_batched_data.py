"""The data path of a step: `train_batches` (all P members as one tensor) gives every
member exactly the batch it got one member at a time, from the seeds (seed, rank, member,
step), so resuming and bit-exactness do not depend on which path built it."""
import numpy as np
import pytest
import torch

from trainers.tasks.listops import ListOpsData
from trainers.tasks.lm import LMData, member_generator


def windows_one_by_one(stream: np.ndarray, *, seed, rank, world_size, member, step, batch_size, seq_len):
    """The original per-window reading of LMData: one slice per window, stacked."""
    size = len(stream) // world_size
    start, stop = rank * size, (rank + 1) * size
    offsets = start + member_generator(seed, rank, member, step).integers(0, stop - start - seq_len - 1,
                                                                          size=batch_size)
    rows = torch.from_numpy(np.stack([np.asarray(stream[o:o + seq_len + 1], dtype=np.int64) for o in offsets]))
    return rows[:, :-1], rows[:, 1:]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lm_batches_equal_the_per_member_windows(dtype):
    stream = (np.arange(50_000) % 251).astype(dtype)
    data = LMData(stream, stream[:2_000], vocab_size=256, seq_len=16, seed=7)
    for step in (0, 3):
        inputs_PBT, targets_PBT = data.train_batches(rank=1, world_size=3, members=4, step=step, batch_size=5)
        assert inputs_PBT.shape == targets_PBT.shape == (4, 5, 16) and inputs_PBT.dtype == torch.int64
        for member in range(4):
            inputs, targets = windows_one_by_one(stream, seed=7, rank=1, world_size=3, member=member, step=step,
                                                 batch_size=5, seq_len=16)
            assert torch.equal(inputs_PBT[member], inputs) and torch.equal(targets_PBT[member], targets)
            one_inputs, one_targets = data.train_batch(rank=1, world_size=3, member=member, step=step, batch_size=5)
            assert torch.equal(one_inputs, inputs) and torch.equal(one_targets, targets)


def test_listops_batches_equal_the_per_member_batches():
    data = ListOpsData(seq_len=64, num_train=200, num_val=20, num_test=20, seed=1, min_len=10, max_len=64,
                       max_depth=3, max_args=4)
    tokens_PBT, labels_PB = data.train_batches(rank=0, world_size=2, members=3, step=9, batch_size=6)
    assert tokens_PBT.shape == (3, 6, 64) and labels_PB.shape == (3, 6)
    for member in range(3):
        tokens, labels = data.train_batch(rank=0, world_size=2, member=member, step=9, batch_size=6)
        assert torch.equal(tokens_PBT[member], tokens) and torch.equal(labels_PB[member], labels)


def test_image_batches_equal_the_per_member_batches():
    from trainers.tasks.images import ImageData

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (40, 4, 5), dtype=np.uint8), rng.integers(0, 3, 40)
    data = ImageData({"train": (images, labels), "val": (images[:4], labels[:4])}, num_classes=3, seed=2)
    tokens_PBT, labels_PB = data.train_batches(rank=1, world_size=2, members=3, step=5, batch_size=6)
    assert tokens_PBT.shape == (3, 6, 20) and labels_PB.shape == (3, 6)
    for member in range(3):
        tokens, member_labels = data.train_batch(rank=1, world_size=2, member=member, step=5, batch_size=6)
        assert torch.equal(tokens_PBT[member], tokens) and torch.equal(labels_PB[member], member_labels)
