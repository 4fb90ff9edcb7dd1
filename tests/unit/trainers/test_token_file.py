"""The token_file task: a user's pre-tokenized .npy or raw .bin file."""
import numpy as np
import pytest

from launch.spec.problems import SpecError
from launch.spec.schema import validate_tree
from trainers.tasks import build_task_data


@pytest.mark.parametrize("suffix, dtype", [(".npy", "uint16"), (".bin", "uint16"), (".bin", "uint32")])
def test_token_file_round_trip(tmp_path, suffix, dtype):
    tokens = (np.arange(20_000) % 1000).astype(dtype)
    path = tmp_path / f"tokens{suffix}"
    np.save(path, tokens) if suffix == ".npy" else tokens.tofile(path)
    spec = validate_tree({"task": {"kind": "token_file", "path": str(path), "dtype": dtype,
                                   "vocab_size": 1000, "seq_len": 32, "val_fraction": 0.1}})
    data = build_task_data(spec.task, seed=0)
    assert data.vocab_size == 1000 and len(data.train) == 18_000 and len(data.val) == 2_000
    inputs, targets = data.train_batch(rank=0, world_size=2, member=0, step=0, batch_size=4)
    assert inputs.shape == (4, 32) and ((targets - inputs) % 1000 == 1).all()
    assert int(data.val[0]) == 18_000 % 1000  # validation is the file's tail


@pytest.mark.parametrize("content, expected", [
    (np.array([{"not": "tokens"}], dtype=object), "holds object values; token ids must be an unsigned integer"),
    (np.array([1.5, 2.5]), "holds float64 values"),
    (np.array([3, 12], dtype=np.uint16), "holds token id 12, outside vocab_size 10"),
])
def test_bad_npy_files_are_spec_problems(tmp_path, content, expected):
    path = tmp_path / "tokens.npy"
    np.save(path, content, allow_pickle=True)
    with pytest.raises(SpecError, match=f"task.path: .*{expected}"):
        validate_tree({"task": {"kind": "token_file", "path": str(path), "vocab_size": 10}})


def test_bin_of_odd_size_is_a_spec_problem(tmp_path):
    path = tmp_path / "tokens.bin"
    path.write_bytes(b"\x01\x00\x02")
    with pytest.raises(SpecError, match="3 bytes, not a whole number of uint16 ids"):
        validate_tree({"task": {"kind": "token_file", "path": str(path), "vocab_size": 10}})


def test_missing_token_file_is_a_spec_problem(tmp_path):
    with pytest.raises(SpecError, match="task.path: token file not found"):
        validate_tree({"task": {"kind": "token_file", "path": str(tmp_path / "nope.bin"), "vocab_size": 10}})
