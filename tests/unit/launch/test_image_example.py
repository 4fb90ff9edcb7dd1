"""`make image-example` (launch/image_example.py): the toy image set behind
configs/image_file_example.yaml, and that the spec validates on the files it writes."""
import numpy as np

from launch.image_example import SHAPES, main, shape_images
from launch.spec.schema import load_spec
from trainers.tasks import build_task_data

REPO_CONFIG = "configs/image_file_example.yaml"


def test_shapes_are_seeded_balanced_and_in_the_image_file_format():
    images, labels = shape_images(30, seed=1)
    again, _ = shape_images(30, seed=1)
    assert np.array_equal(images, again) and not np.array_equal(images, shape_images(30, seed=2)[0])
    assert images.shape == (30, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [10, 10, 10] and len(SHAPES) == 3
    assert all((image.max(-1) >= 160).sum() >= 8 for image in images)  # every image shows its shape


def test_the_example_spec_validates_and_builds_patch_tokens(tmp_path):
    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npy", "labels.npy"]  # no temporary file left
    spec = load_spec(REPO_CONFIG, [f"task.path={tmp_path / 'images.npy'}",
                                   f"task.labels_path={tmp_path / 'labels.npy'}"])
    assert (spec.task.patch_size, spec.task.grid, spec.task.seq_len) == (4, (8, 8), 64)
    data = build_task_data(spec.task, seed=spec.seed)
    assert (data.num_classes, data.patch_size) == (3, 4)
    assert [len(labels) for _, labels in data.val_batches(rank=0, world_size=1, batch_size=300)] == [300]

