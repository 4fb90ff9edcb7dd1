"""Task specs build their data objects, with the causality each task implies."""
import pytest

from launch.spec.problems import SpecError
from launch.spec.schema import validate_tree
from trainers.tasks import build_task_data


def test_listops_spec_builds_classification_data():
    spec = validate_tree({"task": {"kind": "listops", "seq_len": 128, "min_len": 20, "max_len": 100,
                                   "num_train": 50, "num_val": 10, "num_test": 10}})
    data = build_task_data(spec.task, seed=1)
    assert (data.num_classes, data.causal, spec.task.causal) == (10, False, False)
    tokens, labels = data.train_batch(rank=0, world_size=2, member=0, step=0, batch_size=4)
    assert tokens.shape == (4, 128) and labels.shape == (4,) and int(labels.max()) < 10


def test_lm_tasks_are_causal():
    assert validate_tree({}).task.causal is True


def test_listops_lengths_must_fit():
    with pytest.raises(SpecError, match="task: Value error, need min_len <= max_len <= seq_len"):
        validate_tree({"task": {"kind": "listops", "seq_len": 64, "max_len": 100}})
