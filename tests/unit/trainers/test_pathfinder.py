"""Pathfinder: determinism, label balance, labels against the generator's own geometry,
the cache, and the task spec."""
import numpy as np
import pytest

from launch.spec.schema import validate_tree
from trainers.tasks import build_task_data
from trainers.tasks import pathfinder as pf
from trainers.tasks.pathfinder_data import pathfinder_split


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_same_seed_same_set():
    first, second, other = (pf.generate(300, seed=s, contour_length=9)[:2] for s in (5, 5, 6))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], other[0])


def test_labels_balanced_over_10k():
    # Labels are a fair coin drawn after the snakes, whatever the picture; small images
    # keep 10k examples fast (~5 s; 32x32 hard runs ~400 images/s on this machine).
    _, labels, _ = pf.generate(10_000, seed=0, size=16, contour_length=6)
    assert abs(labels.mean() - 0.5) < 0.02


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_markers_sit_on_the_ends_of_the_snakes_the_label_says(difficulty):
    length = pf.DIFFICULTIES[difficulty]
    images, labels, record = pf.generate(400, seed=1, contour_length=length)
    rows = np.arange(len(labels))
    origin, terminal = record.marker_snake.T
    assert set(origin) | set(terminal) <= {0, 1}  # markers go on target snakes only
    assert np.array_equal(labels, (origin == terminal).astype(np.int64))
    targets = record.paddles[:, :2]
    assert not np.isnan(targets).any()  # both target snakes have all their paddles
    assert np.allclose(record.markers[:, 0], targets[rows, origin, 0, 0])  # first end of its snake
    assert np.allclose(record.markers[:, 1], targets[rows, terminal, length - 1, 1])  # last end of its snake
    y, x = np.floor(record.markers).astype(int).transpose(2, 0, 1)
    assert (images[rows[:, None], y, x] == 255).all()  # a marker is drawn on each end


def test_only_the_markers_are_fully_bright():
    # A model can tell the markers from the curves by grey level alone: curves are 0.8 px
    # wide and anti-aliased (never >= 250), the 3 px marker disks have full-white pixels.
    images, _, record = pf.generate(200, seed=7, contour_length=6)
    y, x = np.mgrid[:32, :32] + 0.5
    near = ((y[None, None] - record.markers[:, :, 0, None, None]) ** 2
            + (x[None, None] - record.markers[:, :, 1, None, None]) ** 2 < 2.5 ** 2).any(1)
    assert (images[~near] < 250).all()
    assert ((images >= 250) & near).sum((1, 2)).min() >= 2  # both markers, in every image


def test_snakes_never_touch():
    # Different snakes keep their strokes apart (the generator's clearance), so a marker's
    # curve can only be followed to its own other end.
    style = pf.Style()
    _, _, record = pf.generate(100, seed=2, contour_length=9, style=style)
    for image in record.paddles:
        lines = [np.concatenate([np.linspace(a, b, 9) for a, b in snake if not np.isnan(a).any()])
                 for snake in image if not np.isnan(snake).all()]
        for i in range(len(lines)):
            for j in range(i + 1, len(lines)):
                gaps = np.linalg.norm(lines[i][:, None] - lines[j][None], axis=-1)
                assert gaps.min() > style.thickness


def test_generated_sets_are_cached(tmp_path):
    images, labels = pathfinder_split(50, seed=3, size=16, contour_length=6)
    cached = list((tmp_path / "cache" / "sparsepop" / "pathfinder").iterdir())
    assert [p.suffix for p in cached] == [".npz"]  # no temporary file left behind
    with np.load(cached[0], allow_pickle=False) as stored:
        assert np.array_equal(stored["images"], images) and np.array_equal(stored["labels"], labels)
    again = pathfinder_split(50, seed=3, size=16, contour_length=6)
    assert np.array_equal(again[0], images)
    pathfinder_split(50, seed=4, size=16, contour_length=6)
    assert len(list(cached[0].parent.iterdir())) == 2  # keyed by the parameters


def test_pathfinder_spec_builds_grid_classification_data():
    spec = validate_tree({"task": {"kind": "pathfinder", "size": 16, "difficulty": "easy", "num_train": 40,
                                   "num_val": 10, "num_test": 10}})
    assert (spec.task.grid, spec.task.seq_len, spec.task.causal) == ((16, 16), 256, False)
    data = build_task_data(spec.task, seed=0)
    assert (data.vocab_size, data.num_classes, data.pad_id, data.causal, data.grid) == (256, 2, None, False, (16, 16))
    tokens, labels = data.train_batch(rank=1, world_size=2, member=0, step=0, batch_size=4)
    assert tokens.shape == (4, 256) and labels.shape == (4,) and int(tokens.max()) <= 255
    again, _ = data.train_batch(rank=1, world_size=2, member=0, step=0, batch_size=4)
    assert (tokens == again).all()  # any step's batch can be recomputed
    shards = [np.concatenate([b[1].numpy() for b in data.val_batches(rank=r, world_size=2, batch_size=3)])
              for r in range(2)]
    assert sum(len(s) for s in shards) == 10


def test_batches_keep_each_image_with_its_own_label():
    # Sharding, sampling and the eval batching hand out (image, label) pairs of the split.
    spec = validate_tree({"task": {"kind": "pathfinder", "size": 16, "difficulty": "easy", "num_train": 40,
                                   "num_val": 10, "num_test": 10}})
    data = build_task_data(spec.task, seed=0)
    for split, batches in (("train", [data.train_batch(rank=r, world_size=2, member=m, step=s, batch_size=8)
                                      for r in range(2) for m in range(2) for s in range(3)]),
                           ("val", data.val_batches(rank=1, world_size=2, batch_size=3))):
        images, labels = data.splits[split]
        flat = images.reshape(len(images), -1)
        for tokens, got in batches:
            for row, label in zip(tokens.numpy(), got.numpy()):
                (index,) = np.flatnonzero((flat == row).all(1))[:1]
                assert labels[index] == label


def test_one_dimensional_tasks_have_no_grid():
    assert validate_tree({}).task.grid is None
    assert validate_tree({"task": {"kind": "listops"}}).task.grid is None
