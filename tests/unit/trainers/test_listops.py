"""ListOps: evaluator, generator (bounds, depth, distribution), tokenizer, data sharding."""

import random

import numpy as np
import pytest
import torch

from trainers.tasks import listops as lo


@pytest.mark.parametrize(
    "text, label",
    [
        ("7", 7),
        ("[MIN 3 1 4 ]", 1),
        ("[MAX 3 1 4 ]", 4),
        ("[SM 9 8 7 ]", 4),  # 24 mod 10
        ("[SM 9 9 9 9 9 9 9 9 9 9 ]", 0),  # 90 mod 10
        ("[MED 5 1 3 ]", 3),  # odd length: the middle value
        ("[MED 1 2 ]", 1),  # even length: int(np.median) = int(1.5) = 1
        ("[MED 3 9 1 7 ]", 5),  # sorted 1 3 7 9 -> (3 + 7) / 2 = 5
        ("[MED [MAX 1 8 ] 2 [SM 5 5 ] 9 ]", 5),  # 8 2 0 9 -> sorted 0 2 8 9 -> 5
        ("[MED [MIN 4 6 ] [MAX 1 2 ] ]", 3),  # 4 2 -> 3.0
        ("[SM [MAX 2 [MIN 7 5 ] ] 9 [MED 1 2 3 ] ]", 6),  # depth 3: MIN=5, MAX=5, MED=2, 16 mod 10
        ("[MAX 4 3 [MIN 2 3 ] 1 0 ]", 4),
    ],
)
def test_evaluate_hand_computed(text, label):
    tree = lo.parse_tokens(text.split())
    assert lo.evaluate(tree) == label
    assert lo.tree_to_tokens(tree) == text.split()


def test_median_matches_lra_numpy_median():
    rng = random.Random(0)
    for _ in range(500):
        vals = [rng.randrange(10) for _ in range(rng.randint(2, 10))]
        assert lo.evaluate((lo.MED, tuple(vals))) == int(np.median(vals))


def test_tokens_keep_closing_brackets_and_depth():
    tree = (lo.MIN, (3, (lo.SM, (9, 4)), 8))
    assert lo.tree_to_tokens(tree) == ["[MIN", "3", "[SM", "9", "4", "]", "8", "]"]
    assert lo.parse_tokens(lo.tree_to_tokens(tree)) == tree
    assert lo.tree_depth(7) == 1 and lo.tree_depth(tree) == 3
    with pytest.raises(ValueError):
        lo.parse_tokens(["[MIN", "3", "4"])  # unclosed


def test_reference_generator_respects_depth():
    rng = random.Random(0)
    depths = [lo.tree_depth(lo.generate_tree(rng, 1, 4, 5)) for _ in range(500)]
    assert max(depths) == 4  # reached, never exceeded


@pytest.mark.parametrize("min_len, max_len, max_depth, max_args",
                         [(50, 120, 6, 5), (100, 512, 10, 10), (4, 30, 3, 4)])
def test_generator_respects_length_and_depth(min_len, max_len, max_depth, max_args):
    examples = lo.generate_examples(300, seed=1, min_len=min_len, max_len=max_len, max_depth=max_depth, max_args=max_args)
    assert len(examples) == 300
    assert len({tuple(t) for t, _ in examples}) == 300  # distinct, as LRA's set
    depths = []
    for tokens, label in examples:
        assert min_len <= len(tokens) <= max_len
        tree = lo.parse_tokens(tokens)  # well formed
        assert lo.evaluate(tree) == label
        depths.append(lo.tree_depth(tree))
    assert max(depths) <= max_depth


def _spine(tokens: list[str]) -> int:
    return next(i for i, tok in enumerate(tokens) if tok not in lo.OPERATORS)


def test_fast_generator_matches_reference_distribution():
    # The level-histogram sampler must give LRA's distribution: compare it with the
    # node-by-node reference on length, depth, left-spine length (operators before the
    # first digit: sensitive to the within-level shuffle) and label frequencies.
    min_len, max_len, n = 20, 100, 2000
    rng, ref = random.Random(3), []
    while len(ref) < n:
        tree = lo.generate_tree(rng, 1, 10, 10, max_tokens=max_len)
        if tree is not None and len(lo.tree_to_tokens(tree)) >= min_len:
            tokens = lo.tree_to_tokens(tree)
            ref.append((len(tokens), lo.tree_depth(tree), _spine(tokens), lo.evaluate(tree)))
    fast = [(len(t), lo.tree_depth(lo.parse_tokens(t)), _spine(t), y)
            for t, y in lo.generate_examples(n, seed=3, min_len=min_len, max_len=max_len, max_depth=10, max_args=10)]
    a, b = np.array(ref, float), np.array(fast, float)
    for col in (0, 1, 2):  # means agree within sampling noise
        z = (a[:, col].mean() - b[:, col].mean()) / np.sqrt((a[:, col].var() + b[:, col].var()) / n)
        assert abs(z) < 4.5, (col, a[:, col].mean(), b[:, col].mean())
    freq_a = np.bincount(a[:, 3].astype(int), minlength=10) / n
    freq_b = np.bincount(b[:, 3].astype(int), minlength=10) / n
    assert np.abs(freq_a - freq_b).max() < 0.05  # ~4 standard errors at n = 2000


def test_generator_is_deterministic_and_prefix_stable():
    kw = dict(min_len=20, max_len=80, max_depth=8, max_args=6)
    first = lo.generate_examples(60, seed=5, **kw)
    assert first == lo.generate_examples(60, seed=5, **kw)
    assert first[:30] == lo.generate_examples(30, seed=5, **kw)
    assert first != lo.generate_examples(60, seed=6, **kw)


def test_impossible_window_raises():
    # Lengths are 1 (a digit) or >= 4 (an operator with 2 operands): 2..3 is empty.
    with pytest.raises(RuntimeError, match="widen"):
        lo.generate_examples(1, seed=0, min_len=2, max_len=3, max_depth=2, max_args=3)
    with pytest.raises(ValueError):
        lo.generate_examples(1, seed=0, min_len=10, max_len=5, max_depth=5, max_args=3)


def test_tokenizer_round_trip():
    assert lo.VOCAB[lo.PAD_ID] == "<pad>" and lo.PAD_ID == 0
    assert len(lo.VOCAB) == len(set(lo.VOCAB)) == 16 and lo.NUM_CLASSES == 10
    tokens, _ = lo.generate_examples(1, seed=0, min_len=40, max_len=90, max_depth=10, max_args=10)[0]
    ids = lo.encode(tokens)
    assert all(0 < i < len(lo.VOCAB) for i in ids)
    assert lo.decode(ids + [lo.PAD_ID] * 5) == tokens


@pytest.fixture(scope="module")
def data():
    return lo.ListOpsData(seq_len=128, num_train=90, num_val=23, num_test=20, seed=7,
                          min_len=20, max_len=100, max_depth=8, max_args=6)


def _rows(tokens: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in tokens}


def test_data_layout_and_determinism(data):
    assert data.tokens_train.shape == (90, 128) and data.tokens_train.dtype == np.int64
    assert data.labels_test.shape == (20,) and data.labels_test.dtype == np.int64
    assert (data.vocab_size, data.num_classes, data.pad_id, data.causal) == (16, 10, 0, False)
    for row, label in zip(data.tokens_val, data.labels_val):  # right-padded, label right
        tokens = lo.decode(row)
        assert (row[len(tokens):] == lo.PAD_ID).all() and (row[: len(tokens)] != lo.PAD_ID).all()
        assert lo.evaluate(lo.parse_tokens(tokens)) == label
    again = lo.ListOpsData(seq_len=128, num_train=90, num_val=23, num_test=20, seed=7,
                           min_len=20, max_len=100, max_depth=8, max_args=6)
    for name in ("train", "val", "test"):
        assert np.array_equal(getattr(data, f"tokens_{name}"), getattr(again, f"tokens_{name}"))
        assert np.array_equal(getattr(data, f"labels_{name}"), getattr(again, f"labels_{name}"))
    # Splits share no sequence, and another seed gives other data.
    train, val, test = _rows(data.tokens_train), _rows(data.tokens_val), _rows(data.tokens_test)
    assert not (train & val) and not (train & test) and not (val & test)
    other = lo.ListOpsData(seq_len=128, num_train=90, num_val=23, num_test=20, seed=8,
                           min_len=20, max_len=100, max_depth=8, max_args=6)
    assert not np.array_equal(other.tokens_train, data.tokens_train)
    assert len(np.unique(data.labels_train)) >= 5  # several classes present


def test_label_distribution_covers_classes():
    labels = [y for _, y in lo.generate_examples(1000, seed=2, min_len=100, max_len=300, max_depth=10, max_args=10)]
    counts = np.bincount(labels, minlength=10)
    assert (counts > 20).sum() == 10  # every class shows up (0 and 9 most, as in LRA)


def test_seq_len_shorter_than_max_len_is_rejected():
    with pytest.raises(ValueError, match="seq_len"):
        lo.ListOpsData(seq_len=64, num_train=4, num_val=2, num_test=2, seed=0, min_len=10, max_len=100)


def test_train_batches_come_from_own_shard(data):
    index = {row.tobytes(): i for i, row in enumerate(data.tokens_train)}
    world = 3
    for rank in range(world):
        for step in range(5):
            tokens, labels = data.train_batch(rank=rank, world_size=world, member=0, step=step, batch_size=8)
            assert tokens.shape == (8, 128) and tokens.dtype == torch.int64 and labels.dtype == torch.int64
            ids = [index[row.tobytes()] for row in tokens.numpy()]
            assert all(i % world == rank for i in ids)
            assert len(set(ids)) == 8  # no repeats within a batch
            assert labels.tolist() == data.labels_train[ids].tolist()


def test_members_get_own_recomputable_order(data):
    kw = dict(rank=1, world_size=2, step=4, batch_size=8)
    a, _ = data.train_batch(member=0, **kw)
    b, _ = data.train_batch(member=1, **kw)
    assert not torch.equal(a, b)
    assert torch.equal(a, data.train_batch(member=0, **kw)[0])  # no hidden state
    assert not torch.equal(a, data.train_batch(member=0, **{**kw, "step": 5})[0])


def test_eval_batches_cover_split_once_in_fixed_order(data):
    world, seen = 2, []
    for rank in range(world):
        batches = data.val_batches(rank=rank, world_size=world, batch_size=5)
        assert [len(y) for _, y in batches] == ([5, 5, 2] if rank == 0 else [5, 5, 1])
        seen += [row.tobytes() for x, _ in batches for row in x.numpy()]
        again = data.val_batches(rank=rank, world_size=world, batch_size=5)
        assert all(torch.equal(x, x2) for (x, _), (x2, _) in zip(batches, again))
    assert sorted(seen) == sorted(_rows(data.tokens_val)) and len(seen) == 23
    assert len(data.test_batches(rank=0, world_size=2, batch_size=4, max_batches=2)) == 2
    with pytest.raises(ValueError, match="rank"):
        data.val_batches(rank=2, world_size=2, batch_size=4)
