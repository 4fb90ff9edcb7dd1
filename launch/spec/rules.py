"""Rules that span spec sections, one function per owner of the rule; each returns the
problems it finds (all are reported together)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from compression import METHODS
from compression.spec_types import shorten
from distrib.deepspeed_check import deepspeed_config_problems
from launch.spec.deepspeed_config import build_deepspeed_config, deepspeed_owned_keys
from launch.spec.problems import Problem
from launch.spec.storage import storage_problems
from pbt.tune_mapping import tune_backend_problems
from trainers.attention import ALL_KINDS
from trainers.attention.grid import requires_grid
from trainers.compiling import compile_problem
from trainers.config import (
    ImageFileTask,
    ImageTask,
    ListOpsTask,
    PathfinderTask,
    StdlibCodeTask,
    TokenFileTask,
)
from trainers.conv_stem import STEM_PATCH
from trainers.npy_header import npy_header
from trainers.tasks.image_file import image_file_problems
from trainers.tasks.lm import (
    load_token_file,
    split_problem,
    stdlib_corpus_lengths,
    token_file_problem,
)
from trainers.tasks.splits import tail_split

if TYPE_CHECKING:
    from launch.spec.schema import JobSpec


def cross_section_problems(spec: JobSpec) -> list[Problem]:
    task = task_problems(spec)
    # The model's rules read the task's shape (seq_len, grid), unknown while its files are bad.
    model = [] if task else model_problems(spec) + image_model_problems(spec)
    return (deepspeed_problems(spec) + task + model + train_problems(spec) + population_problems(spec)
            + launcher_problems(spec) + storage_problems(spec.run.storage, spec.name))


def deepspeed_problems(spec: JobSpec) -> list[Problem]:
    """`distributed.deepspeed` (passed through to DeepSpeed): the merged config by DeepSpeed's
    own config model, then against the rest of the spec."""
    ds = spec.distributed.deepspeed
    checked = deepspeed_config_problems(build_deepspeed_config(spec))
    problems = [Problem(".".join(filter(None, ("distributed.deepspeed", key))), message) for key, message in checked]
    refused = {key.split(".")[0] for key, _ in checked}  # "" when DeepSpeed refused the whole
    if "" in refused:  # the rules below would only guess
        return problems
    micro, accum, world = spec.train.micro_batch_size, spec.train.grad_accum_steps, spec.distributed.num_workers
    if "train_batch_size" in ds and "train_batch_size" not in refused and ds["train_batch_size"] != micro * accum * world:
        problems.append(Problem(
            "distributed.deepspeed.train_batch_size",
            f"{shorten(ds['train_batch_size'])} breaks DeepSpeed's rule train_batch_size = micro_batch × grad_accum "
            f"× world_size = {micro} × {accum} × {world} = {micro * accum * world}; remove it (it is derived) or "
            "change train.micro_batch_size, train.grad_accum_steps or distributed.num_workers"))
    for key, value in deepspeed_owned_keys(spec).items():
        if key in ds and key not in refused and ds[key] != value:
            problems.append(Problem(f"distributed.deepspeed.{key}",
                                    f"{shorten(ds[key])} conflicts with the spec's value {value!r}; set it through "
                                    "the train section (train.micro_batch_size, train.grad_accum_steps, "
                                    "train.grad_clip) and remove it here"))
    for key in ("optimizer", "scheduler"):
        if key in ds:
            problems.append(Problem(f"distributed.deepspeed.{key}",
                                    f"the {key} is built from the train section (train.optimizer, train.lr, "
                                    "train.lr_schedule, ...) so each member can have its own; remove it here"))
    zero = ds.get("zero_optimization")
    stage = zero.get("stage", 0) if isinstance(zero, dict) and "zero_optimization" not in refused else 0
    if isinstance(stage, str | bool):
        problems.append(Problem("distributed.deepspeed.zero_optimization.stage",
                                f"{shorten(stage)} is {'text' if isinstance(stage, str) else 'a boolean'}, not a stage "
                                "number; write stage: 0 (a number, without quotes), the only stage sparsepop supports"))
    elif stage != 0:
        problems.append(Problem("distributed.deepspeed.zero_optimization.stage",
                                f"stage {shorten(stage)} is not supported: ZeRO reduces gradients into its own "
                                "partitioned buffers (stage 1 at the step, stages 2/3 inside backward hooks), which "
                                "sparsepop's gradient exchange replaces; use stage 0"))
    for key in ("fp16", "bf16"):
        section = ds.get(key)
        if key not in refused and isinstance(section, dict) and section.get("enabled"):
            problems.append(Problem(f"distributed.deepspeed.{key}.enabled",
                                    "mixed-precision optimizers keep gradients outside param.grad (and fp16 "
                                    "rescales them every step), where sparsepop's gradient exchange and its "
                                    "error-feedback residuals cannot follow; remove it and set train.precision: bf16 or fp16 "
                                    "instead (autocast with fp32 gradients, a loss scale per member for fp16)"))
    return problems


def task_problems(spec: JobSpec) -> list[Problem]:
    """The task's files, read before anything starts, and whether every worker gets data."""
    task, workers = spec.task, spec.distributed.num_workers
    if isinstance(task, TokenFileTask):
        if problem := token_file_problem(task.path, task.dtype, task.vocab_size):
            return [Problem("task.path", problem)]
        splits = tail_split(len(load_token_file(task.path, task.dtype)), task.val_fraction)
        return _lm_split_problems(splits, task.seq_len, workers, file=True)
    if isinstance(task, StdlibCodeTask):
        return _lm_split_problems(stdlib_corpus_lengths(task.val_fraction), task.seq_len, workers, file=False)
    if isinstance(task, ImageFileTask):
        problems = image_file_problems(task.path, task.labels_path)
        if problems:
            return [Problem(key, message) for key, message in problems]
        splits = dict(zip(("training", "validation"), tail_split(npy_header(task.labels_path)[0][0], task.val_fraction)))
        return [Problem("task.val_fraction", f"leaves {count} {split} images for {workers} workers; each needs at "
                                             "least one: change task.val_fraction, or use fewer workers")
                for split, count in splits.items() if count < workers] + _patch_problems(
                    task.patch_size, npy_header(task.path)[0][1:3])
    if isinstance(task, ListOpsTask | PathfinderTask):
        return [Problem(f"task.{key}", f"{getattr(task, key)} examples for {workers} workers; each needs at least "
                                       f"one: raise task.{key} or use fewer workers")
                for key in ("num_train", "num_val", "num_test") if getattr(task, key) < workers] + (
                    _patch_problems(task.patch_size, (task.size, task.size)) if isinstance(task, PathfinderTask) else [])
    return []


def _patch_problems(patch_size: int, image: tuple[int, int]) -> list[Problem]:
    """Patches tile the image exactly: a partial patch at the edge would have no pixels to read."""
    height, width = image
    if height % patch_size == 0 and width % patch_size == 0:
        return []
    fits = [p for p in range(1, min(height, width) + 1) if height % p == 0 and width % p == 0]
    return [Problem("task.patch_size", f"{patch_size} does not divide the {height}x{width} images; patches must "
                                       f"tile them exactly: use one of {', '.join(map(str, fits))}")]


def _lm_split_problems(splits: tuple[int, int], seq_len: int, workers: int, *, file: bool) -> list[Problem]:
    """Each worker samples windows of seq_len + 1 tokens from its own shard of each split."""
    short = {name: problem for name, tokens in zip(("training", "validation"), splits)
             if (problem := split_problem(name, tokens, seq_len=seq_len, workers=workers))}
    if not short:
        return []
    longest = min(splits) // workers // 2 - 1
    fixes = ([f"lower task.seq_len to at most {longest}"] if longest > 0 else []) + (
        ["use fewer workers"] if workers > 1 else []) + (
        [f"use a {'larger' if 'validation' in short else 'smaller'} task.val_fraction"] if len(short) == 1 else []) + (
        ["use a longer token file"] if file else [])
    fix = ", ".join(fixes[:-1]) + " or " + fixes[-1] if len(fixes) > 1 else fixes[0]
    return [Problem("task.seq_len", f"{seq_len} is too long for the data: {'; '.join(short.values())}: {fix}")]


# Attention sizes counted in tokens. A chunk or block longer than the sequence is padded to
# its full length, so memory grows with the size (its square, for the quadratic part inside
# a chunk) whatever seq_len is: `group_size: 100000` would allocate 160 GB for 64 tokens.
TOKEN_SIZES = {"flash": "group_size", "linear": "chunk_size", "performer": "chunk_size",
               "hypercube": "block_size", "mra": "block_size", "lara": "num_landmarks"}
CAUSAL_ONLY = {"linear", "performer"}  # their chunks exist in the causal form only
# rpe_fft learns one value per offset up to max_offset; farther offsets than seq_len - 1
# never occur, so a larger table only costs memory. Its default is allowed on any length.
RPE_DEFAULT_OFFSET = 1024


def model_problems(spec: JobSpec) -> list[Problem]:
    """The attention kind against the task and the model's width."""
    problems: list[Problem] = []
    attention = spec.model.attention
    kind, seq_len = attention.kind, spec.task.seq_len
    if spec.task.causal and not ALL_KINDS[kind].supports_causal:
        problems.append(Problem("model.attention.kind",
                                f"{kind!r} is bidirectional only (as in its paper), but task {spec.task.kind!r} "
                                "predicts the next token, which needs causal attention; use softmax, linear, "
                                "performer, flash, hypercube, rpe_fft or collaborative, or a bidirectional task "
                                "such as listops"))
    size_key = TOKEN_SIZES.get(kind)
    if size_key and (spec.task.causal or kind not in CAUSAL_ONLY) and getattr(attention, size_key) > seq_len:
        problems.append(Problem(f"model.attention.{size_key}",
                                f"{getattr(attention, size_key)} exceeds task.seq_len ({seq_len}): every sequence "
                                "would be padded to that many tokens, for nothing; set it to at most "
                                f"{seq_len}"))
    if kind == "rpe_fft" and attention.max_offset > max(seq_len - 1, RPE_DEFAULT_OFFSET):
        problems.append(Problem("model.attention.max_offset",
                                f"{attention.max_offset} is beyond any offset of a {seq_len}-token sequence (at most "
                                f"{seq_len - 1}): the table of 2 × max_offset + 1 values per member would hold values "
                                f"no token pair uses; set it to at most {max(seq_len - 1, RPE_DEFAULT_OFFSET)}"))
    if requires_grid(ALL_KINDS[kind]) and spec.task.grid is None:
        without = ", ".join(sorted(name for name, cls in ALL_KINDS.items() if not requires_grid(cls)))
        problems.append(Problem("model.attention.kind",
                                f"{kind!r} weights tokens by their distance on an image grid, but task.kind "
                                f"{spec.task.kind!r} has no grid (1-D tokens); use a task with a grid (pathfinder, "
                                f"image_file) or a kind that needs none: {without}"))
    if kind == "collaborative" and attention.key_dim > spec.model.d_model:
        problems.append(Problem("model.attention.key_dim",
                                f"{attention.key_dim} exceeds model.d_model ({spec.model.d_model}): the shared "
                                "query/key projection is meant to be narrower than the heads' concatenation; set "
                                f"key_dim to at most {spec.model.d_model} (the paper uses d_model/4 to d_model/8)"))
    if kind == "mra" and attention.block_size <= seq_len:
        blocks = -(-seq_len // attention.block_size)
        if attention.blocks_per_row > blocks:
            problems.append(Problem("model.attention.blocks_per_row",
                                    f"{attention.blocks_per_row} exceeds the {blocks} blocks in a row "
                                    f"(task.seq_len {seq_len} / model.attention.block_size "
                                    f"{attention.block_size}, rounded up); set it to at most {blocks} "
                                    f"({blocks} computes every block exactly)"))
    return problems


def image_model_problems(spec: JobSpec) -> list[Problem]:
    """`model.image_stem`, `model.pool` and `model.classifier_init` against the task: what makes and
    reads its tokens."""
    problems: list[Problem] = []
    task = spec.task
    if spec.model.image_stem == "conv" and not isinstance(task, ImageTask):
        problems.append(Problem("model.image_stem",
                                f"conv is a CNN over an image's pixels, but task.kind {task.kind!r} has no images; "
                                "remove it (linear is the default) or use an image task (pathfinder, image_file)"))
    elif spec.model.image_stem == "conv" and task.patch_size != STEM_PATCH:
        problems.append(Problem("task.patch_size",
                                f"{task.patch_size} cannot be made by model.image_stem conv: its two 2x2 max pools "
                                f"make one token per {STEM_PATCH}x{STEM_PATCH} pixels; set task.patch_size: "
                                f"{STEM_PATCH}, or model.image_stem: linear for other patch sizes"))
    if task.causal:  # a language model: a prediction per token from the tied head, no pool, no classifier
        what = {"pool": "summarises the tokens for a classifier", "classifier_init": "starts a classifier's weights"}
        for key in what:
            if getattr(spec.model, key) != type(spec.model).model_fields[key].default:
                problems.append(Problem(f"model.{key}",
                                        f"{getattr(spec.model, key)} {what[key]}, but task.kind {task.kind!r} is a "
                                        "language model (a prediction per token, nothing pooled, no classifier); "
                                        "remove it, or use a classification task (listops, pathfinder, image_file)"))
    return problems


def train_problems(spec: JobSpec) -> list[Problem]:
    """`train.compile` against the machine (a compiler for inductor's code)."""
    why = compile_problem(use_gpu=spec.distributed.use_gpu) if spec.train.compile else None
    return [Problem("train.compile", why)] if why else []


def population_problems(spec: JobSpec) -> list[Problem]:
    """PBT's mutations against the compression method, and the Tune backend's own rules."""
    problems: list[Problem] = []
    pbt, method = spec.population.pbt, spec.compression.method
    if pbt and "density" in pbt.hyperparam_mutations and "density" not in METHODS[method].reads:
        with_density = " or ".join(sorted(n for n, m in METHODS.items() if "density" in m.reads))
        problems.append(Problem("population.pbt.hyperparam_mutations.density",
                                f"compression.method {method!r} sends no density-sized subset of the gradient, so "
                                f"there is no density to mutate; set compression.method to one of {with_density}, "
                                "or remove the density mutation"))
    problems += [Problem(path, message)
                 for path, message in tune_backend_problems(spec.population, launcher=spec.distributed.launcher)]
    return problems


def launcher_problems(spec: JobSpec) -> list[Problem]:
    """What each launcher can start."""
    problems: list[Problem] = []
    if spec.distributed.backend == "mpi" and spec.distributed.launcher == "ray":
        problems.append(Problem("distributed.backend",
                                "'mpi' needs ranks started by an MPI launcher (Ray 2.60 ships no MPI runtime); set "
                                "distributed.launcher: mpi and run `mpiexec -n W python -m launch run SPEC`, or use "
                                "backend: torch under Ray"))
    if spec.population.groups > 1 and spec.distributed.launcher == "mpi":
        problems.append(Problem("population.groups",
                                "several groups are several Ray Train worker groups meeting at a Ray actor; "
                                "use distributed.launcher: ray, or groups: 1 under mpiexec"))
    return problems
