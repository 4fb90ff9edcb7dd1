"""Language-modelling data: the stdlib corpus split, sharding and per-member order."""
import numpy as np
import pytest

from trainers.tasks.lm import LMData, stdlib_corpus, stdlib_corpus_lengths, stdlib_source_files


@pytest.fixture(scope="module")
def data():
    # Token i of the stream is i itself, so a row tells which window it came from.
    positions = np.arange(100_000, dtype=np.int64)
    return LMData(positions, positions[:5_000], vocab_size=100_000, seq_len=16, seed=3)


def test_workers_read_disjoint_shards(data):
    lm = data
    seen = []
    for rank in range(4):
        tokens = set()
        for step in range(50):
            inputs, targets = lm.train_batch(rank=rank, world_size=4, member=0, step=step, batch_size=8)
            tokens.update(inputs.flatten().tolist())
            tokens.update(targets.flatten().tolist())
        low, high = lm.shard_bounds(lm.train, rank, 4)
        assert min(tokens) >= low and max(tokens) < high
        seen.append(tokens)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not seen[a] & seen[b]


def test_targets_are_inputs_shifted_by_one(data):
    lm = data
    inputs, targets = lm.train_batch(rank=0, world_size=1, member=0, step=0, batch_size=4)
    assert inputs.shape == targets.shape == (4, 16)
    assert (inputs[:, 1:] == targets[:, :-1]).all() and (targets - inputs == 1).all()


def test_members_have_their_own_order_and_steps_are_reproducible(data):
    lm = data
    batch = lambda member, step: lm.train_batch(rank=1, world_size=2, member=member, step=step, batch_size=8)[0]  # noqa: E731
    assert not (batch(0, 5) == batch(1, 5)).all()
    assert not (batch(0, 5) == batch(0, 6)).all()
    assert (batch(1, 7) == batch(1, 7)).all()


def test_validation_windows_are_fixed_and_sharded(data):
    lm = data
    first = lm.val_batches(rank=0, world_size=2, batch_size=4, max_batches=3)
    again = lm.val_batches(rank=0, world_size=2, batch_size=4, max_batches=3)
    other = lm.val_batches(rank=1, world_size=2, batch_size=4, max_batches=3)
    assert len(first) == 3 and all((a[0] == b[0]).all() for a, b in zip(first, again))
    assert max(b[1].max() for b in first) < min(b[0].min() for b in other)


def test_stdlib_corpus_is_split_by_file():
    files = stdlib_source_files()
    assert len(files) > 100 and files == sorted(files, key=lambda p: p.as_posix())
    assert not any("site-packages" in p.parts or "test" in p.parts for p in files)
    train, val = stdlib_corpus(0.05)
    assert train.dtype == np.uint8 and 0.01 < len(val) / (len(train) + len(val)) < 0.15
    lm = LMData(train, val, vocab_size=256, seq_len=64, seed=0)
    assert 2.5 < lm.unigram_baseline() < np.log(256)  # bytes of code are far from uniform
    assert stdlib_corpus_lengths(0.05) == (len(train), len(val))  # what validation checks seq_len against


def test_too_short_split_is_a_clear_error():
    with pytest.raises(ValueError, match=r"validation split has 10 tokens; it needs at least 2 × \(seq_len \+ 1\) = 130"):
        LMData(np.zeros(1000, dtype=np.int64), np.zeros(10, dtype=np.int64), vocab_size=2, seq_len=64, seed=0)
