"""`launch resume RUN_DIR [--set ...]`: the run's own spec, train.steps extended at most;
any other change refused (exit 2) with the keys that differ, before anything starts."""
import json

import pytest

from launch.cli import main
from launch.runs.resume import differing_keys, resume_spec
from launch.spec.problems import SpecError
from launch.spec.schema import load_spec


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as `launch run` leaves it before training: spec.yaml (resolved)."""
    spec = load_spec("configs/tiny.yaml", [f"run.storage={tmp_path}"])
    folder = tmp_path / "tiny-run"
    folder.mkdir()
    (folder / "spec.yaml").write_text(spec.to_yaml())
    return folder


def paths(err: SpecError) -> list[str]:
    return [problem.path for problem in err.problems]


def test_the_runs_own_spec_and_a_longer_train_steps(run_dir):
    assert resume_spec(run_dir, []) == load_spec(run_dir / "spec.yaml")
    assert resume_spec(run_dir, ["train.steps=50"]).train.steps == 50


def test_every_other_change_is_refused_with_its_key(run_dir):
    with pytest.raises(SpecError) as err:
        resume_spec(run_dir, ["train.lr=1e-3", "model.d_model=64", "train.steps=50"])
    assert paths(err.value) == ["model.d_model", "train.lr"]
    assert "differs from the run's spec.yaml (0.003 -> 0.001)" in str(err.value)


def test_train_steps_can_only_grow(run_dir):
    with pytest.raises(SpecError) as err:
        resume_spec(run_dir, ["train.steps=10"])
    assert paths(err.value) == ["train.steps"] and "can only be extended (20 -> 10" in str(err.value)


def test_a_completed_run_resumes_only_when_extended(run_dir):
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(SpecError, match="has completed its 20 steps"):
        resume_spec(run_dir, [])
    assert resume_spec(run_dir, ["train.steps=30"]).train.steps == 30


def test_a_tune_run_resumes_with_its_own_train_steps(tmp_path):
    (tmp_path / "spec.yaml").write_text(load_spec("configs/tune_pbt.yaml").to_yaml())
    with pytest.raises(SpecError) as err:
        resume_spec(tmp_path, ["train.steps=100"])
    assert paths(err.value) == ["train.steps"] and "Tune's restored experiment" in str(err.value)
    assert resume_spec(tmp_path, []).population.backend == "tune"


def test_a_run_of_several_groups_resumes_and_may_be_extended(tmp_path):
    (tmp_path / "spec.yaml").write_text(load_spec("configs/pbt_groups.yaml").to_yaml())
    assert resume_spec(tmp_path, []).population.groups == 2
    assert resume_spec(tmp_path, ["train.steps=100"]).train.steps == 100


def test_the_cli_exits_2_naming_the_keys(run_dir, capsys):
    assert main(["resume", str(run_dir), "--set", "seed=3", "--set", "run.max_failures=5"]) == 2
    err = capsys.readouterr().err
    assert "2 problems; nothing was started" in err and "  run.max_failures: differs" in err and "  seed: differs" in err
    assert main(["resume", str(run_dir / "nope")]) == 2
    assert "not a run directory (no spec.yaml)" in capsys.readouterr().err


def test_differing_keys_of_nested_mappings():
    assert differing_keys({"a": {"b": 1, "c": [1]}, "d": 2}, {"a": {"b": 1, "c": [2]}, "e": 3}) == {
        "a.c": ([1], [2]), "d": (2, None), "e": (None, 3)}
