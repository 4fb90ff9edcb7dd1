"""Rules that span spec sections, one function per owner of the rule; each returns the
problems it finds (all are reported together)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from compression import METHODS
from launch.spec.problems import Problem
from pbt.tune_mapping import tune_backend_problems
from trainers.attention import ALL_KINDS
from trainers.attention.grid import requires_grid
from trainers.config import ImageFileTask, TokenFileTask
from trainers.tasks.image_file import image_file_problems
from trainers.tasks.lm import token_file_problem

if TYPE_CHECKING:
    from launch.spec.schema import JobSpec


def cross_section_problems(spec: JobSpec) -> list[Problem]:
    task = task_problems(spec)
    # The model's rules read the task's shape (seq_len, grid), unknown while its files are bad.
    model = [] if task else model_problems(spec)
    return deepspeed_problems(spec) + task + model + population_problems(spec) + launcher_problems(spec)


def deepspeed_owned_keys(spec: JobSpec) -> dict[str, object]:
    """DeepSpeed keys the spec owns; a pass-through value must agree with the spec."""
    return {
        "train_micro_batch_size_per_gpu": spec.train.micro_batch_size,
        "gradient_accumulation_steps": spec.train.grad_accum_steps,
        # DeepSpeed's clip takes one norm over every member; train.grad_clip is applied
        # per member by the worker instead.
        "gradient_clipping": 0.0,
    }


def deepspeed_problems(spec: JobSpec) -> list[Problem]:
    """`distributed.deepspeed` (passed through to DeepSpeed) against the rest of the spec."""
    problems: list[Problem] = []
    ds = spec.distributed.deepspeed
    micro, accum, world = spec.train.micro_batch_size, spec.train.grad_accum_steps, spec.distributed.num_workers
    if "train_batch_size" in ds and ds["train_batch_size"] != micro * accum * world:
        problems.append(Problem(
            "distributed.deepspeed.train_batch_size",
            f"{ds['train_batch_size']} breaks DeepSpeed's rule train_batch_size = micro_batch × grad_accum × "
            f"world_size = {micro} × {accum} × {world} = {micro * accum * world}; remove it (it is derived) or "
            "change train.micro_batch_size, train.grad_accum_steps or distributed.num_workers"))
    for key, value in deepspeed_owned_keys(spec).items():
        if key in ds and ds[key] != value:
            problems.append(Problem(f"distributed.deepspeed.{key}",
                                    f"{ds[key]!r} conflicts with the spec's value {value!r}; set it through "
                                    "the train section (train.micro_batch_size, train.grad_accum_steps, "
                                    "train.grad_clip) and remove it here"))
    for key in ("optimizer", "scheduler"):
        if key in ds:
            problems.append(Problem(f"distributed.deepspeed.{key}",
                                    f"the {key} is built from the train section (train.optimizer, train.lr, "
                                    "train.lr_schedule, ...) so each member can have its own; remove it here"))
    stage = (ds.get("zero_optimization") or {}).get("stage", 0)
    if stage != 0:
        problems.append(Problem("distributed.deepspeed.zero_optimization.stage",
                                f"stage {stage} is not supported: ZeRO reduces gradients into its own partitioned "
                                "buffers (stage 1 at the step, stages 2/3 inside backward hooks), which sparsepop's "
                                "gradient exchange replaces; use stage 0"))
    for key in ("fp16", "bf16"):
        if (ds.get(key) or {}).get("enabled"):
            problems.append(Problem(f"distributed.deepspeed.{key}.enabled",
                                    "mixed-precision optimizers keep gradients outside param.grad (and fp16 "
                                    "rescales them every step), where sparsepop's gradient exchange and its "
                                    "error-feedback residuals cannot follow; remove it and set train.precision: bf16 or fp16 "
                                    "instead (autocast with fp32 gradients, a loss scale per member for fp16)"))
    return problems


def task_problems(spec: JobSpec) -> list[Problem]:
    """The task's files, read before anything starts."""
    if isinstance(spec.task, TokenFileTask):
        problem = token_file_problem(spec.task.path, spec.task.dtype, spec.task.vocab_size)
        if problem:
            return [Problem("task.path", problem)]
    if isinstance(spec.task, ImageFileTask):
        return [Problem(key, message) for key, message in image_file_problems(spec.task.path, spec.task.labels_path)]
    return []


def model_problems(spec: JobSpec) -> list[Problem]:
    """The attention kind against the task and the model's width."""
    problems: list[Problem] = []
    attention = spec.model.attention
    kind = attention.kind
    if spec.task.causal and not ALL_KINDS[kind].supports_causal:
        problems.append(Problem("model.attention.kind",
                                f"{kind!r} is bidirectional only (as in its paper), but task {spec.task.kind!r} "
                                "predicts the next token, which needs causal attention; use softmax, linear, "
                                "performer, flash, hypercube, rpe_fft or collaborative, or a bidirectional task "
                                "such as listops"))
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
    if kind == "mra":
        blocks = -(-spec.task.seq_len // attention.block_size)
        if attention.blocks_per_row > blocks:
            problems.append(Problem("model.attention.blocks_per_row",
                                    f"{attention.blocks_per_row} exceeds the {blocks} blocks in a row "
                                    f"(task.seq_len {spec.task.seq_len} / model.attention.block_size "
                                    f"{attention.block_size}, rounded up); set it to at most {blocks} "
                                    f"({blocks} computes every block exactly)"))
    return problems


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
