"""The image_file task: a user's uint8 images and integer labels as two .npy files."""
import numpy as np
import pytest

from launch.spec.problems import SpecError
from launch.spec.schema import validate_tree
from trainers.tasks import build_task_data


def _write(tmp_path, images, labels):
    path, labels_path = tmp_path / "images.npy", tmp_path / "labels.npy"
    np.save(path, images, allow_pickle=True)
    np.save(labels_path, labels, allow_pickle=True)
    return {"kind": "image_file", "path": str(path), "labels_path": str(labels_path)}


def test_grey_images_round_trip(tmp_path):
    images = np.arange(20 * 4 * 6, dtype=np.int64).reshape(20, 4, 6).astype(np.uint8)
    task = _write(tmp_path, images, np.arange(20) % 3) | {"val_fraction": 0.25}
    spec = validate_tree({"task": task})
    assert (spec.task.grid, spec.task.seq_len, spec.task.causal) == ((4, 6), 24, False)
    data = build_task_data(spec.task, seed=0)
    assert (data.vocab_size, data.num_classes, data.pad_id, data.grid) == (256, 3, None, (4, 6))
    tokens, labels = data.train_batch(rank=0, world_size=2, member=0, step=0, batch_size=3)
    for row, label in zip(tokens.numpy(), labels.numpy()):
        index = int(np.flatnonzero((images.reshape(20, -1) == row).all(1))[0])  # pixels read row by row
        assert index < 15 and index % 2 == 0 and label == index % 3  # training split, rank 0's shard
    val = data.val_batches(rank=0, world_size=1, batch_size=8)
    assert [int(v) for v in val[0][1]] == [i % 3 for i in range(15, 20)]  # validation is the tail


def test_colour_channels_average_to_grey(tmp_path):
    images = np.zeros((4, 2, 2, 3), np.uint8)
    images[..., 0], images[..., 1] = 255, 100  # mean 118.33 -> 118
    data = build_task_data(validate_tree({"task": _write(tmp_path, images, np.array([0, 1, 0, 1])),
                                          "distributed": {"num_workers": 1}}).task, seed=0)
    tokens, _ = data.val_batches(rank=0, world_size=1, batch_size=4)[0]
    assert data.grid == (2, 2) and (tokens == 118).all()


GOOD_IMAGES, GOOD_LABELS = np.zeros((6, 4, 4), np.uint8), np.arange(6) % 2


@pytest.mark.parametrize("images, labels, key, expected", [
    (GOOD_IMAGES.astype(np.float32), GOOD_LABELS, "task.path", "holds float32 values; images must be uint8"),
    (np.zeros((6, 16), np.uint8), GOOD_LABELS, "task.path", r"shape \(6, 16\); images must be \[N, H, W\]"),
    (np.array([{"not": "pixels"}], dtype=object), GOOD_LABELS, "task.path", "holds object values"),
    (GOOD_IMAGES, np.arange(5), "task.labels_path", "holds 5 labels for the 6 images"),
    (GOOD_IMAGES, GOOD_LABELS.astype(np.float64), "task.labels_path", "holds float64 values; labels must be integers"),
    (GOOD_IMAGES, GOOD_LABELS.reshape(3, 2), "task.labels_path", r"shape \(3, 2\); labels must be one integer"),
    (GOOD_IMAGES, np.array([0, 1, -1, 0, 1, 0]), "task.labels_path", "holds label -1"),
    (GOOD_IMAGES, np.array(list("abcdef"), dtype=object), "task.labels_path", "holds object values"),
])
def test_bad_files_are_spec_problems(tmp_path, images, labels, key, expected):
    with pytest.raises(SpecError, match=f"{key}: .*{expected}"):
        validate_tree({"task": _write(tmp_path, images, labels)})


def test_missing_files_are_spec_problems(tmp_path):
    task = {"kind": "image_file", "path": str(tmp_path / "nope.npy"), "labels_path": str(tmp_path / "nope2.npy")}
    with pytest.raises(SpecError, match="task.path: image file not found") as raised:
        validate_tree({"task": task})
    assert "task.labels_path: labels file not found" in str(raised.value)


def test_truncated_file_is_a_spec_problem(tmp_path):
    task = _write(tmp_path, GOOD_IMAGES, GOOD_LABELS)
    data = (tmp_path / "images.npy").read_bytes()
    (tmp_path / "images.npy").write_bytes(data[:-10])
    with pytest.raises(SpecError, match="task.path: .* is not a readable .npy array"):
        validate_tree({"task": task})
