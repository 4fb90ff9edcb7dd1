"""Every class of bad input fails at `launch validate` and `launch run`: exit 2, the key path
and how to fix it, no traceback, no run directory, at once. Through the real CLI entry
(`launch.cli.main` in-process; a subprocess where a hang or a crash is what is tested)."""
import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from compression.spec_types import NOT_BOOL_OR_TEXT
from launch.cli import main
from launch.spec.schema import JobSpec

REPO = Path(__file__).resolve().parents[3]
BASE = "name: bad\ntrain: {steps: 10}\n"


def refused(tmp_path, capsys, text: str, *overrides: str, command: str = "validate",
            data: bytes | None = None) -> str:
    """Run `launch COMMAND spec` on a spec whose run.storage is tmp_path/runs; asserts the
    refusal and returns stderr."""
    spec = tmp_path / "spec.yaml"
    if data is None:
        text += f"\nrun: {{storage: {tmp_path / 'runs'}}}\n" if "run:" not in text else ""
        spec.write_text(text)
    else:
        spec.write_bytes(data)
    capsys.readouterr()
    status = main([command, str(spec), *[arg for o in overrides for arg in ("--set", o)]])
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert "Traceback" not in err and "nothing was started" in err
    assert not (tmp_path / "runs").exists()
    return err


def accepted(tmp_path, capsys, text: str, *overrides: str) -> str:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text + f"\nrun: {{storage: {tmp_path / 'runs'}}}\n")
    status = main(["validate", str(spec), *[arg for o in overrides for arg in ("--set", o)]])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


# ---------------------------------------------------------------- booleans and text as numbers

def _numeric_fields(model: type[BaseModel], prefix: str = "", seen=None):
    """(dotted path, annotation, metadata) of every int/float anywhere in the spec's models."""
    seen = set() if seen is None else seen
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        yield from _numbers_in(field.annotation, field.metadata, f"{prefix}{model.__name__}.{name}", seen)


def _numbers_in(annotation, metadata, where, seen):
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        yield from _numbers_in(base, [*metadata, *extra], where, seen)
    elif annotation in (int, float):
        yield where, annotation, metadata
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _numeric_fields(annotation, "", seen)
    else:
        for arg in typing.get_args(annotation):
            yield from _numbers_in(arg, [], where, seen)


def test_every_numeric_field_refuses_booleans_and_text():
    fields = list(_numeric_fields(JobSpec))
    assert len(fields) > 50  # every section, every attention kind and task, mutations, betas, resources
    lax = [where for where, _, metadata in fields if NOT_BOOL_OR_TEXT not in metadata]
    assert not lax, f"use compression.spec_types' Int/Float types for: {lax}"


@pytest.mark.parametrize("text, overrides, key", [
    ("name: bad\ntrain: {lr: true}\n", [], "train.lr"),
    (BASE, ["distributed.num_workers=yes"], "distributed.num_workers"),
    (BASE, ["train.betas=[true, 0.9]"], "train.betas.0"),
    (BASE, ["compression.density=on"], "compression.density"),
    (BASE, ["distributed.resources_per_worker={CPU: true}"], "distributed.resources_per_worker.CPU"),
    (BASE, ["population={size: 2, pbt: {hyperparam_mutations: {lr: [true, 0.1]}}}"],
     "population.pbt.hyperparam_mutations.lr"),
    (BASE, ["train.steps='100'"], "train.steps"),
])
def test_booleans_and_text_are_not_numbers(tmp_path, capsys, text, overrides, key):
    err = refused(tmp_path, capsys, text, *overrides)
    assert f"{key}" in err and "expected a number, got" in err


@pytest.mark.parametrize("value", ["1", "'true'", "yes please"])
def test_switches_take_only_true_or_false(tmp_path, capsys, value):
    err = refused(tmp_path, capsys, BASE, f"train.compile={value}")
    assert "train.compile" in err and "write true or false" in err


def test_compile_without_a_cpp_compiler_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++, c++ or clang++ there
    monkeypatch.delenv("CXX", raising=False)
    err = refused(tmp_path, capsys, BASE, "train.compile=true")
    assert "train.compile" in err and "needs a C++ compiler" in err and "train.compile: false" in err


def test_compile_is_accepted_where_a_compiler_is(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CXX", "g++")
    assert "compile: true" in accepted(tmp_path, capsys, BASE, "train.compile=true")


def test_quoted_number_says_to_drop_the_quotes(tmp_path, capsys):
    assert "write the number without quotes" in refused(tmp_path, capsys, BASE, "train.steps='100'")


# ---------------------------------------------------------------- non-finite numbers

@pytest.mark.parametrize("override, key", [
    ("train.lr=.inf", "train.lr"),
    ("train.weight_decay=.inf", "train.weight_decay"),
    ("train.grad_clip=.nan", "train.grad_clip"),
    ("population={size: 2, pbt: {hyperparam_mutations: {lr: {loguniform: [1.0e-4, .inf]}}}}",
     "population.pbt.hyperparam_mutations.lr"),
    ("population={size: 2, pbt: {hyperparam_mutations: {dropout: [0.1, .nan]}}}",
     "population.pbt.hyperparam_mutations.dropout"),
    ("population={size: 2, pbt: {bytes_penalty: .inf, hyperparam_mutations: {lr: [0.1, 0.2]}}}",
     "population.pbt.bytes_penalty"),
    ("distributed.resources_per_worker={CPU: .nan}", "distributed.resources_per_worker.CPU"),
    ("model.attention={kind: flash, expansion: .inf}", "model.attention.expansion"),
])
def test_non_finite_numbers_are_refused(tmp_path, capsys, override, key):
    err = refused(tmp_path, capsys, BASE, override)
    assert key in err and ("finite" in err or ".nan" in err)


def test_infinity_is_taken_where_it_means_no_limit(tmp_path, capsys):
    assert "round_timeout_s: .inf" in accepted(tmp_path, capsys, BASE, "population.round_timeout_s=.inf")
    assert "population.round_timeout_s" in refused(tmp_path, capsys, BASE, "population.round_timeout_s=.nan")
    assert "only population.round_timeout_s takes .inf" in refused(tmp_path, capsys, BASE, "train.lr=-.inf")


# ---------------------------------------------------------------- optimizer ranges and seeds

@pytest.mark.parametrize("override, keys", [
    ("train.betas=[1.5, -2]", ["train.betas.0", "train.betas.1"]),
    ("train.betas=[0.9, 1.0]", ["train.betas.1"]),
    ("train.momentum=1", ["train.momentum"]),
    ("train.min_lr_ratio=2", ["train.min_lr_ratio"]),
    ("train.lr=0", ["train.lr"]),
    ("seed=-1", ["seed"]),
    ("seed=99999999999999", ["seed"]),
    ("model.attention={kind: performer, seed: -3}", ["model.attention.seed"]),
])
def test_out_of_range_settings(tmp_path, capsys, override, keys):
    err = refused(tmp_path, capsys, BASE, override)
    assert all(key in err for key in keys), err


# ---------------------------------------------------------------- data too short for seq_len

def test_seq_len_longer_than_the_corpus_shards(tmp_path, capsys):
    err = refused(tmp_path, capsys, BASE + "task: {kind: stdlib_code, seq_len: 400000}\n")
    assert "task.seq_len: 400000 is too long for the data" in err and "lower task.seq_len to at most" in err


@pytest.mark.parametrize("tokens, suffix, expected", [
    (np.zeros(0, np.uint16), ".bin", "is empty"),
    (np.zeros(0, np.uint16), ".npy", "task.seq_len: 128 is too long for the data: the training split has 0 tokens"),
    (np.zeros(300, np.uint16), ".bin", "task.seq_len: 128 is too long for the data"),
])
def test_token_file_too_short(tmp_path, capsys, tokens, suffix, expected):
    path = tmp_path / f"tokens{suffix}"
    np.save(path, tokens) if suffix == ".npy" else tokens.tofile(path)
    err = refused(tmp_path, capsys, BASE + f"task: {{kind: token_file, path: {path}, vocab_size: 10}}\n")
    assert expected in err


def test_relative_data_paths_become_absolute(tmp_path, capsys, monkeypatch):
    """Ray Train's workers run in their own directory: a relative path is resolved where
    `launch` starts, as run.storage is."""
    np.arange(5000, dtype=np.uint16).tofile(tmp_path / "tokens.bin")
    monkeypatch.chdir(tmp_path)
    out = accepted(tmp_path, capsys, BASE + "task: {kind: token_file, path: tokens.bin, vocab_size: 5000, seq_len: 16}\n")
    assert f"path: {tmp_path / 'tokens.bin'}" in out


def test_every_worker_needs_examples(tmp_path, capsys):
    err = refused(tmp_path, capsys, BASE + "task: {kind: listops, seq_len: 64, min_len: 10, max_len: 64, num_val: 1}\n")
    assert "task.num_val: 1 examples for 2 workers" in err


# ---------------------------------------------------------------- resources and attention sizes

@pytest.mark.parametrize("override", ["distributed.resources_per_worker={CPU: -1}",
                                      "distributed.resources_per_worker={CPU: .inf}",
                                      "distributed.resources_per_worker={CPU: 1.0e-6}"])
def test_resources_are_finite_not_negative_and_in_rays_units(tmp_path, capsys, override):
    assert "distributed.resources_per_worker" in refused(tmp_path, capsys, BASE, override)


@pytest.mark.parametrize("attention, key", [
    ("{kind: flash, group_size: 100000}", "model.attention.group_size: 100000 exceeds task.seq_len (128)"),
    ("{kind: linear, chunk_size: 256}", "model.attention.chunk_size"),
    ("{kind: hypercube, block_size: 512}", "model.attention.block_size"),
    ("{kind: rpe_fft, max_offset: 100000000}", "model.attention.max_offset"),
])
def test_attention_sizes_beyond_the_sequence(tmp_path, capsys, attention, key):
    assert key in refused(tmp_path, capsys, BASE, f"model.attention={attention}")


def test_unused_chunk_size_of_a_bidirectional_task_is_fine(tmp_path, capsys):
    accepted(tmp_path, capsys, BASE + "task: {kind: listops, seq_len: 64, min_len: 10, max_len: 64}\n",
             "model.attention={kind: performer, chunk_size: 128}")


# ---------------------------------------------------------------- image stem and pool against the task

@pytest.mark.parametrize("text, expected", [
    ("task: {kind: listops, seq_len: 64, min_len: 10, max_len: 64}\nmodel: {image_stem: conv}\n",
     "model.image_stem: conv is a CNN over an image's pixels, but task.kind 'listops' has no images"),
    ("task: {kind: pathfinder, size: 16}\nmodel: {image_stem: conv}\n",
     "task.patch_size: 1 cannot be made by model.image_stem conv: its two 2x2 max pools make one token per 4x4 "
     "pixels; set task.patch_size: 4"),
    ("task: {kind: pathfinder, size: 16, patch_size: 8}\nmodel: {image_stem: conv}\n",
     "task.patch_size: 8 cannot be made by model.image_stem conv"),
    ("model: {pool: max}\n", "model.pool: max summarises the tokens for a classifier, but task.kind "
                             "'stdlib_code' is a language model"),
    ("model: {image_stem: cnn}\n", "model.image_stem: Input should be 'linear' or 'conv'"),
    ("model: {pool: sum}\n", "model.pool: Input should be 'mean' or 'max'"),
    ("model: {classifier_init: fan_in}\n", "model.classifier_init: fan_in starts a classifier's weights, but "
                                           "task.kind 'stdlib_code' is a language model"),
    ("model: {classifier_init: xavier}\n", "model.classifier_init: Input should be 'small' or 'fan_in'"),
    ("model: {positions: sinusoidal}\n", "model.positions: Input should be 'learned' or 'none'"),
])
def test_image_stem_and_pool_that_cannot_work(tmp_path, capsys, text, expected):
    assert expected in refused(tmp_path, capsys, BASE + text)


def test_conv_stem_with_max_pool_on_4x4_patches_is_accepted(tmp_path, capsys):
    accepted(tmp_path, capsys, BASE + "task: {kind: pathfinder, size: 16, patch_size: 4}\n"
                                      "model: {image_stem: conv, pool: max, positions: none, "
                                      "classifier_init: fan_in}\n")


# ---------------------------------------------------------------- DeepSpeed pass-through

@pytest.mark.parametrize("deepspeed, key, expected", [
    ("{zero_optimization: 5}", "distributed.deepspeed.zero_optimization", "a mapping of its options"),
    ("{fp16: true}", "distributed.deepspeed.fp16", "a mapping of its options"),
    ("{steps_per_print: x}", "distributed.deepspeed.steps_per_print", "a whole number >= 1"),
    ("{steps_per_print: 0}", "distributed.deepspeed.steps_per_print", "a whole number >= 1"),
    ("{gradient_accumulation_steps: true}", "distributed.deepspeed.gradient_accumulation_steps", "whole number"),
    ("{wall_clock_breakdown: 'yes'}", "distributed.deepspeed.wall_clock_breakdown", "true or false"),
    ("{zero_optimization: {stage: '0'}}", "distributed.deepspeed.zero_optimization.stage",
     "write stage: 0 (a number, without quotes)"),
    ("{zero_optimization: {stgae: 0}}", "distributed.deepspeed.zero_optimization", "stgae: unknown option"),
    ("{fp16: {enabled: false, loss_scale: x}}", "distributed.deepspeed.fp16", "loss_scale"),
    ("{communication_data_type: fp13}", "distributed.deepspeed.communication_data_type", "fp13"),
])
def test_deepspeed_config_model_checks_the_merged_config(tmp_path, capsys, deepspeed, key, expected):
    err = refused(tmp_path, capsys, BASE, f"distributed.deepspeed={deepspeed}")
    assert f"{key}: " in err and expected in err, err


def test_valid_deepspeed_options_pass(tmp_path, capsys):
    accepted(tmp_path, capsys, BASE, "distributed.deepspeed={steps_per_print: 50, comms_logger: {enabled: false}}")


# ---------------------------------------------------------------- run.storage and name

def test_storage_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert "run.storage: " in refused(tmp_path, capsys, BASE + f"run: {{storage: {tmp_path / 'file'}}}\n")
    err = refused(tmp_path, capsys, BASE + f"run: {{storage: {tmp_path / 'file' / 'below'}}}\n")
    assert "cannot be created" in err and "is a file" in err
    assert not (tmp_path / "file").is_dir()


def test_read_only_storage(tmp_path, capsys):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: only a read-only mount stops it
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)],
                          capture_output=True, check=False).returncode:
            pytest.skip("root, and no read-only mount can be made here")
    else:
        read_only.chmod(0o555)
    try:
        err = refused(tmp_path, capsys, BASE + f"run: {{storage: {read_only / 'runs'}}}\n")
        assert "run.storage: " in err and "is not writable" in err
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(read_only)], check=True)
        read_only.chmod(0o755)


def test_names_too_long_for_a_file_name(tmp_path, capsys):
    err = refused(tmp_path, capsys, BASE, "name=" + "n" * 240)
    assert "name: 240 bytes long" in err and "shorten name to at most" in err
    assert "over the" in refused(tmp_path, capsys, BASE + f"run: {{storage: {tmp_path / ('s' * 300) / 'x'}}}\n")


# ---------------------------------------------------------------- the spec file itself

def test_not_utf8(tmp_path, capsys):
    err = refused(tmp_path, capsys, "", data=b"name: caf\xe9\n")
    assert "not UTF-8 text (byte 0xe9 on line 1)" in err


@pytest.mark.parametrize("text, expected", [
    ("? [1, 2]\n: 3\n", "a key must be text, got a list"),
    ("train: &a [*a]\n", "an alias refers to a value that contains it"),
    ("train: " + "[" * 40 + "]" * 40 + "\n", "nested more than 32 levels deep"),
    ("train: " + "[" * 3000 + "]" * 3000 + "\n", "nested more than 32 levels deep"),
    ("base: &b {lr: 0.1}\ntrain:\n  <<: *b\n  steps: 3\n", "YAML merge keys (`<<: *name`) are not supported"),
])
def test_spec_shapes_refused(tmp_path, capsys, text, expected):
    assert expected in refused(tmp_path, capsys, text)


def _run_cli(*args) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "launch", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    return done, time.monotonic() - start


def test_alias_bomb_and_huge_spec_fail_fast(tmp_path):
    """Before the bounds these exhausted memory and hung."""
    bomb = "distributed:\n  deepspeed:\n    x:\n      a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    bomb += "".join(f"      a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 12))
    (tmp_path / "bomb.yaml").write_text(bomb)
    (tmp_path / "huge.yaml").write_text("distributed:\n  deepspeed:\n    x: [" + "1, " * 1_000_000 + "1]\n")
    for name, expected in (("bomb.yaml", "more than 100,000 values once aliases"),
                           ("huge.yaml", "bytes; a spec file is at most 1,048,576 bytes")):
        done, seconds = _run_cli("validate", str(tmp_path / name))
        assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert seconds < 60, seconds  # the Python start-up and imports; no expansion happens


def test_long_values_are_cut_short(tmp_path, capsys):
    err = refused(tmp_path, capsys, BASE, "train.optimizer=" + "x" * 10_000)
    assert "... (10,002 characters)" in err and max(map(len, err.splitlines())) < 400
    err = refused(tmp_path, capsys, BASE, "distributed.deepspeed={zero_optimization: {stage: " + "9" * 3000 + "}}")
    assert "characters)" in err and max(map(len, err.splitlines())) < 400
    assert "an integer of 5,000 digits" in refused(tmp_path, capsys, BASE, "seed=" + "9" * 5000)


# ---------------------------------------------------------------- run refuses the same, sweeps too

@pytest.mark.parametrize("override", ["train.lr=true", "distributed.deepspeed={fp16: true}",
                                      "distributed.resources_per_worker={CPU: .nan}"])
def test_run_refuses_before_starting(tmp_path, capsys, override):
    refused(tmp_path, capsys, BASE, override, command="run")


def test_sweep_grid_setting_a_key_and_its_parent(tmp_path, capsys):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(BASE + f"run: {{storage: {tmp_path / 'runs'}}}\n"
                    "sweep:\n  train.lr: [0.1, 0.01]\n  train: [{lr: 0.5}]\n")
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "sweep.train.lr: set beside its parent sweep.train" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
