"""The job spec: one pydantic model per YAML section, parsed once, here.

Each section's model lives with the component that consumes it (trainers/, distrib/,
compression/, pbt/); this module composes them, adds the `run` section, and checks the
rules that span sections. Every problem is reported at once with its dotted key path.
"""
import os
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from compression import METHODS
from compression.config import CompressionConfig
from distrib.config import DistributedConfig
from launch.errors import Problem, SpecError, did_you_mean
from launch.yaml_io import apply_overrides, parse_yaml
from pbt.config import PopulationConfig
from pbt.tune_mapping import tune_backend_problems
from trainers.attention import BLOCKS, KERNELS
from trainers.config import ModelConfig, StdlibCodeTask, TaskConfig, TokenFileTask, TrainConfig
from trainers.tasks.lm import token_file_problem


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    storage: str = Field("~/sparsepop-runs", description="parent directory of run directories (absolute, or "
                         "relative to the directory `launch run` starts in)")
    checkpoint_interval: PositiveInt = Field(100, description="steps between checkpoints")
    keep_checkpoints: PositiveInt = Field(2, description="checkpoints kept on disk (Ray's num_to_keep)")
    max_failures: int = Field(1, ge=-1, description="worker-group restarts from the last checkpoint "
                              "(Ray's FailureConfig; -1 = unlimited)")


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("sparsepop", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="job name; letters, digits, '_', '.', '-'")
    seed: int = 0
    task: TaskConfig = Field(default_factory=StdlibCodeTask)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    def storage_dir(self) -> Path:
        return Path(os.path.expanduser(self.run.storage)).resolve()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------- loading

def load_spec(path: str | Path, overrides: list[str] = ()) -> JobSpec:
    """Read, override and validate a spec file. Raises SpecError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([Problem(str(path), "spec file not found" if not path.exists() else "not a file")])
    tree = parse_yaml(path.read_text(), source=str(path))
    if tree is None:
        raise SpecError([Problem(str(path), "the spec file is empty; start from configs/quickstart.yaml")])
    if not isinstance(tree, dict):
        raise SpecError([Problem(str(path), f"a spec is a mapping of sections, got a {type(tree).__name__}")])
    if "sweep" in tree:
        raise SpecError([Problem("sweep", "this is a sweep spec (a grid of jobs): run it with "
                                          f"`python -m launch sweep {path}` (`--dry-run` lists the jobs)")])
    return validate_tree(apply_overrides(tree, list(overrides)))


def validate_tree(tree: dict) -> JobSpec:
    try:
        spec = JobSpec.model_validate(tree)
    except ValidationError as err:
        raise SpecError([_problem_from_pydantic(e) for e in err.errors()]) from None
    problems = cross_section_problems(spec)
    if problems:
        raise SpecError(problems)
    return spec


def _problem_from_pydantic(error: dict) -> Problem:
    path, allowed = _walk(error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        hint = did_you_mean(str(error["loc"][-1]), allowed)
        message = "unknown key" + (hint or f"; valid keys: {', '.join(sorted(allowed))}")
    elif error["type"] == "union_tag_invalid":
        tags = [t.strip(" '") for t in error["ctx"]["expected_tags"].split(",")]
        tag = error["ctx"]["tag"]
        path += ".kind"
        message = f"unknown kind {tag!r}" + (did_you_mean(tag, tags) or f"; valid kinds: {', '.join(tags)}")
    elif error["type"] == "missing":
        message = "required key is missing"
    elif "input" in error and not isinstance(error["input"], dict | list):
        message += f" (got {error['input']!r})"
    return Problem(path or "spec", message)


def _walk(loc: tuple) -> tuple[str, set[str]]:
    """Dotted path as the user wrote it (without pydantic's union tags), and the keys
    allowed beside the last element (for 'did you mean')."""
    models: list[type[BaseModel]] = [JobSpec]
    shown: list[str] = []
    for item in loc:
        fields = {name for m in models for name in m.model_fields}
        tagged = [m for m in models if _kind_of(m) == item]
        if item not in fields and tagged:  # a discriminated-union tag, not a key
            models = tagged
            continue
        shown.append(str(item))
        annotations = [m.model_fields[item].annotation for m in models if item in m.model_fields]
        parent_fields = fields
        models = [m for a in annotations for m in _models_in(a)]
    return ".".join(shown), parent_fields if loc else set()


def _kind_of(model: type[BaseModel]):
    field = model.model_fields.get("kind")
    return field.default if field else None


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


# ---------------------------------------------------------------- rules across sections

# DeepSpeed keys the spec owns; a pass-through value must agree with the spec.
def deepspeed_owned_keys(spec: JobSpec) -> dict[str, object]:
    return {
        "train_micro_batch_size_per_gpu": spec.train.micro_batch_size,
        "gradient_accumulation_steps": spec.train.grad_accum_steps,
        # DeepSpeed's clip takes one norm over every member; train.grad_clip is applied
        # per member by the worker instead.
        "gradient_clipping": 0.0,
    }


def cross_section_problems(spec: JobSpec) -> list[Problem]:
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
    if isinstance(spec.task, TokenFileTask):
        problem = token_file_problem(spec.task.path, spec.task.dtype, spec.task.vocab_size)
        if problem:
            problems.append(Problem("task.path", problem))
    for key in ("fp16", "bf16"):
        if (ds.get(key) or {}).get("enabled"):
            problems.append(Problem(f"distributed.deepspeed.{key}.enabled",
                                    "mixed-precision optimizers keep gradients outside param.grad (and fp16 "
                                    "rescales them every step), where sparsepop's gradient exchange and its "
                                    "error-feedback residuals cannot follow; remove it (training runs in fp32)"))
    kind = spec.model.attention.kind
    if spec.task.causal and not {**KERNELS, **BLOCKS}[kind].supports_causal:
        problems.append(Problem("model.attention.kind",
                                f"{kind!r} is bidirectional only (as in its paper), but task {spec.task.kind!r} "
                                "predicts the next token, which needs causal attention; use softmax, linear, "
                                "performer or flash, or a bidirectional task such as listops"))
    pbt = spec.population.pbt
    method = spec.compression.method
    if pbt and "density" in pbt.hyperparam_mutations and "density" not in METHODS[method].reads:
        with_density = " or ".join(sorted(n for n, m in METHODS.items() if "density" in m.reads))
        problems.append(Problem("population.pbt.hyperparam_mutations.density",
                                f"compression.method {method!r} sends no density-sized subset of the gradient, so "
                                f"there is no density to mutate; set compression.method to one of {with_density}, "
                                "or remove the density mutation"))
    if spec.distributed.backend == "mpi" and spec.distributed.launcher == "ray":
        problems.append(Problem("distributed.backend",
                                "'mpi' needs ranks started by an MPI launcher (Ray 2.60 ships no MPI runtime); set "
                                "distributed.launcher: mpi and run `mpiexec -n W python -m launch run SPEC`, or use "
                                "backend: torch under Ray"))
    if spec.population.groups > 1 and spec.distributed.launcher == "mpi":
        problems.append(Problem("population.groups",
                                "several groups are several Ray Train worker groups meeting at a Ray actor; "
                                "use distributed.launcher: ray, or groups: 1 under mpiexec"))
    problems += [Problem(path, message)
                 for path, message in tune_backend_problems(spec.population, launcher=spec.distributed.launcher)]
    return problems
