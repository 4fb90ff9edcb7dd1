"""Spec parsing: defaults, overrides, and every kind of bad input named by its key."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch.spec.problems import SpecError
from launch.spec.schema import JobSpec, load_spec

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def problems_of(tmp_path, text, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, text), list(overrides))
    return [str(p) for p in caught.value.problems]


def test_every_shipped_config_validates():
    from launch.study.sweep import expand_grid, load_sweep

    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name == "image_file_example.yaml":  # its data comes from `make image-example`: validated on
            continue                                # that in tests/unit/launch/test_image_example.py
        if "sweep" in yaml.safe_load(path.read_text()):  # a sweep spec: every trial must validate
            assert expand_grid(*load_sweep(path)).trials, path
        else:
            assert isinstance(load_spec(path), JobSpec), path


def test_defaults_fill_every_section(tmp_path):
    spec = load_spec(write(tmp_path, "name: x\n"))
    assert spec.train.lr == 1e-3 and spec.distributed.num_workers == 2 and spec.task.kind == "stdlib_code"
    assert spec.compression.method == "none" and spec.population.size == 1


def test_sections_are_frozen(tmp_path):
    spec = load_spec(write(tmp_path, "name: x\n"))
    with pytest.raises(Exception):
        spec.train.lr = 1.0


def test_overrides_parse_yaml_scalars(tmp_path):
    spec = load_spec(write(tmp_path, "train: {lr: 0.1}\n"),
                     ["train.lr=1e-3", "distributed.num_workers=1", "model.attention.kind=softmax",
                      "distributed.use_gpu=false", "name=other"])
    assert spec.train.lr == pytest.approx(1e-3) and isinstance(spec.train.lr, float)
    assert spec.distributed.num_workers == 1 and spec.distributed.use_gpu is False and spec.name == "other"


def test_float_without_dot_in_file_is_a_float(tmp_path):
    assert load_spec(write(tmp_path, "train: {lr: 5e-4}\n")).train.lr == pytest.approx(5e-4)


@pytest.mark.parametrize("text, overrides, expected", [
    ("train: {lr: -1}\n", [], "train.lr: Input should be greater than 0"),
    ("model: {atention: {kind: softmax}}\n", [], "model.atention: unknown key; did you mean 'attention'?"),
    ("trian: {lr: 1}\n", [], "trian: unknown key; did you mean 'train'?"),
    ("train: {steps: many}\n", [], "train.steps: expected a number, got text (got 'many')"),
    ("model: {d_model: 100, n_heads: 3}\n", [], "model: Value error, d_model (100) must be divisible"),
    ("task: {kind: wikipedia}\n", [], "task.kind: unknown kind 'wikipedia'"),
    ("task: {kind: token_file, vocab_size: 10, path: /nonexistent/tokens.bin}\n", [],
     "task.path: token file not found: /nonexistent/tokens.bin"),
    ("task: {kind: stdlib_code, seqlen: 3}\n", [], "task.seqlen: unknown key; did you mean 'seq_len'?"),
    ("compression: {density: 0}\n", [], "compression.density"),
    ("distributed: {num_workers: 2, deepspeed: {train_batch_size: 64}}\ntrain: {micro_batch_size: 8}\n", [],
     "train_batch_size = micro_batch × grad_accum × world_size = 8 × 1 × 2 = 16"),
    ("distributed: {deepspeed: {gradient_accumulation_steps: 4}}\n", [],
     "distributed.deepspeed.gradient_accumulation_steps: 4 conflicts with the spec's value 1"),
    ("distributed: {deepspeed: {optimizer: {type: Adam}}}\n", [], "distributed.deepspeed.optimizer:"),
    ("distributed: {deepspeed: {zero_optimization: {stage: 3}}}\n", [],
     "distributed.deepspeed.zero_optimization.stage: stage 3 is not supported"),
    ("distributed: {deepspeed: {zero_optimization: {stage: 1}}}\n", [],
     "distributed.deepspeed.zero_optimization.stage: stage 1 is not supported"),
    ("distributed: {deepspeed: {bf16: {enabled: true}}}\n", [], "distributed.deepspeed.bf16.enabled: mixed-precision"),
    ("distributed: {deepspeed: {fp16: {enabled: true}}}\n", [], "set train.precision: bf16 or fp16 instead"),
    ("name: x\n", ["train.precision=fp8"], "train.precision: Input should be 'fp32', 'bf16' or 'fp16'"),
    ("distributed: {backend: mpi}\n", [], "distributed.backend: 'mpi' needs ranks started by an MPI launcher"),
    ("distributed: {launcher: slurm}\n", [], "distributed.launcher: Input should be 'ray' or 'mpi'"),
    ("compression: {method: topk, density: 1.5}\n", [], "compression.density"),
    ("population: {size: 4, pbt: {hyperparam_mutations: {density: [0.01, 0.1]}}}\n", [],
     "population.pbt.hyperparam_mutations.density: compression.method 'none' sends no density-sized subset"),
    ("compression: {method: powersgd}\n", [], "compression.rank: Value error, method powersgd needs a rank"),
    ("compression: {method: dgc}\n", [], "compression.method: Input should be 'none', 'topk', 'randomk' or 'powersgd'"),
    ("name: 'bad name!'\n", [], "name: String should match pattern"),
    ("model: {attention: {kind: lara}}\n", [], "model.attention.kind: 'lara' is bidirectional only"),
    ("model: {attention: {kind: performer, nb_featurs: 8}}\n", [],
     "model.attention.nb_featurs: unknown key; did you mean 'nb_features'?"),
    ("model: {attention: {kind: vars}}\n", [], "model.attention.kind: 'vars' is bidirectional only"),
    ("model: {attention: {kind: vars, lam: -1}}\n", [], "model.attention.lam: Input should be greater than or equal"),
    ("model: {attention: {kind: vars, shrink: hard}}\n", [], "model.attention.shrink: Input should be 'gelu' or 'soft'"),
    ("model: {attention: {kind: vars, feature_ratio: 0}}\n", [], "model.attention.feature_ratio: Input should be"),
    ("model: {attention: {kind: contextpool}}\n", [], "model.attention.kind: 'contextpool' is bidirectional only"),
    ("model: {attention: {kind: contextpool, max_support: 0}}\n", [],
     "model.attention.max_support: Input should be greater than 0"),
    ("model: {attention: {kind: contextpool, predictor_width: -2}}\n", [],
     "model.attention.predictor_width: Input should be greater than 0"),
    ("model: {attention: {kind: flsh}}\n", [], "model.attention.kind: unknown kind 'flsh'; did you mean 'flash'?"),
    ("model: {d_model: 32, attention: {kind: collaborative, key_dim: 64}}\n", [],
     "model.attention.key_dim: 64 exceeds model.d_model (32)"),
    ("model: {attention: {kind: rpe_fft, max_offset: 0}}\n", [], "model.attention.max_offset"),
    ("model: {attention: {kind: mra}}\n", [], "model.attention.kind: 'mra' is bidirectional only"),
    ("task: {kind: listops, seq_len: 100, max_len: 100}\nmodel: {attention: {kind: mra, blocks_per_row: 5}}\n", [],
     "model.attention.blocks_per_row: 5 exceeds the 4 blocks in a row"),
    ("model: {attention: {kind: mra, block_size: 0}}\n", [], "model.attention.block_size: Input should be greater"),
    ("model: {attention: {kind: hypercube, block_size: 0}}\n", [],
     "model.attention.block_size: Input should be greater"),
    ("task: {kind: listops}\nmodel: {attention: {kind: ripple}}\n", [],
     "model.attention.kind: 'ripple' weights tokens by their distance on an image grid, but task.kind 'listops' "
     "has no grid (1-D tokens); use a task with a grid (pathfinder, image_file) or a kind that needs none: "),
    ("model: {attention: {kind: ripple}}\n", [], "model.attention.kind: 'ripple' is bidirectional only"),
    ("task: {kind: pathfinder}\nmodel: {attention: {kind: ripple, rings: 0}}\n", [],
     "model.attention.rings: Input should be greater than 0"),
    ("name: x\n", ["train.lr"], "--set: 'train.lr' is not of the form key.path=value"),
    ("name: x\n", ["name.first=1"], "name: --set name.first: this key holds a str, not a mapping"),
    ("name: x\n", ["train.lr=[1"], "--set train.lr: invalid YAML"),
])
def test_bad_input_names_the_key(tmp_path, text, overrides, expected):
    assert any(expected in p for p in problems_of(tmp_path, text, overrides)), problems_of(tmp_path, text, overrides)


def test_grid_kinds_are_accepted_on_a_task_with_a_grid(tmp_path):
    spec = load_spec(write(tmp_path, "task: {kind: pathfinder, size: 8}\nmodel: {attention: {kind: ripple}}\n"))
    assert spec.task.grid == (8, 8) and spec.model.attention.rings == 8


def test_all_problems_reported_together(tmp_path):
    found = problems_of(tmp_path, "train: {lr: -1, steps: 0}\nmodel: {atention: 1}\n")
    assert {p.split(":")[0] for p in found} == {"train.lr", "train.steps", "model.atention"}


@pytest.mark.parametrize("text, expected", [
    ("", "the spec file is empty"),
    ("# only a comment\n", "the spec file is empty"),
    ("- a\n- b\n", "a spec is a mapping of sections, got a list"),
    ("train:\n  lr: 1\n  lr: 2\n", "duplicate key 'lr' (first defined on line 2)"),
    ("train: {lr: 1\nmodel: {}\n", "invalid YAML at line"),
    ("train:\n\tlr: 1\n", "invalid YAML at line 2"),
    ("sweep: {compression.method: [none, topk]}\n", "this is a sweep spec (a grid of jobs): run it with"),
])
def test_unreadable_files(tmp_path, text, expected):
    assert any(expected in p for p in problems_of(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "absent.yaml")


def test_resolved_spec_round_trips(tmp_path):
    spec = load_spec(REPO / "configs" / "quickstart.yaml")
    again = load_spec(write(tmp_path, spec.to_yaml()))
    assert again == spec


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "launch", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_validate_prints_resolved_spec():
    done = run_cli("validate", "configs/quickstart.yaml", "--set", "train.lr=2e-3")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert resolved["train"]["lr"] == 2e-3 and resolved["train"]["grad_clip"] == 1.0


def test_cli_bad_precision_exits_2_naming_the_key():
    done = run_cli("validate", "configs/tiny.yaml", "--set", "train.precision=fp8")
    assert done.returncode == 2 and "train.precision" in done.stderr and "Traceback" not in done.stderr


def test_cli_bad_spec_exits_2_without_traceback(tmp_path):
    bad = write(tmp_path, "train: {lr: -1}\nmodel: {atention: 1}\n")
    for command in ("validate", "run"):
        done = run_cli(command, str(bad), "--set", "distributed.num_workers=0")
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        for key in ("train.lr", "model.atention", "distributed.num_workers"):
            assert key in done.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_help_explains_each_command():
    for args, expected in ((["--help"], "validate"), (["run", "--help"], "--set KEY.PATH=VALUE"),
                           (["validate", "--help"], "resolved spec"), (["report", "--help"], "RUN_DIR")):
        done = run_cli(*args)
        assert done.returncode == 0 and expected in done.stdout, done.stdout
