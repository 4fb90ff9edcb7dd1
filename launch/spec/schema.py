"""The job spec: one pydantic model per YAML section, parsed once, here.

Each section's model lives with the component that consumes it (trainers/, distrib/,
compression/, pbt/); this module composes them, adds the `run` section, loads YAML and
turns pydantic's errors into problems; launch/spec/rules.py checks the rules that span
sections. Every problem is reported at once with its dotted key path.
"""
import os
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compression.config import CompressionConfig
from compression.spec_types import Int, PositiveInt, Seed, shorten
from distrib.config import DistributedConfig
from launch.spec.problems import Problem, SpecError, did_you_mean
from launch.spec.rules import cross_section_problems
from launch.spec.yaml_io import apply_overrides, parse_yaml, read_spec_file
from pbt.config import PopulationConfig
from trainers.config import ModelConfig, StdlibCodeTask, TaskConfig, TrainConfig


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    storage: str = Field("~/sparsepop-runs", description="parent directory of run directories (absolute, or "
                         "relative to the directory `launch run` starts in)")
    checkpoint_interval: PositiveInt = Field(100, description="steps between checkpoints")
    keep_checkpoints: PositiveInt = Field(2, description="checkpoints kept on disk (Ray's num_to_keep)")
    max_failures: Int = Field(1, ge=-1, description="worker-group restarts from the last checkpoint "
                              "(Ray's FailureConfig; -1 = unlimited)")


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("sparsepop", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="job name; letters, digits, '_', '.', '-'")
    seed: Seed = Field(0, description="seed of every random draw (0 to 2**32 - 1)")
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
    tree = parse_yaml(read_spec_file(path), source=str(path))
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
    path, allowed, models = _walk(error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        hint = did_you_mean(str(error["loc"][-1]), allowed)
        message = "unknown key" + (hint or f"; valid keys: {', '.join(sorted(allowed))}")
    elif error["type"] == "union_tag_invalid":
        tags = [t.strip(" '") for t in error["ctx"]["expected_tags"].split(",")]
        tag = str(error["ctx"]["tag"])
        path += ".kind"
        message = f"unknown kind {shorten(tag)}" + (did_you_mean(tag, tags) or f"; valid kinds: {', '.join(tags)}")
    elif error["type"] == "union_tag_not_found":
        path += ".kind"
        message = f"required key is missing: name the kind, one of {', '.join(map(str, map(_kind_of, models)))}"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] in ("model_type", "dict_type"):
        message = f"must be a mapping of keys (`key: value` lines, or {{key: value}}), got {shorten(error['input'])}"
    elif error["type"] == "finite_number":
        message = (f"expected a finite number, got {error['input']}; only population.round_timeout_s takes .inf "
                   "(no time limit)")
    elif "input" in error and not isinstance(error["input"], dict | list):
        message += f" (got {shorten(error['input'])})"
    return Problem(path or "spec", message)


def _walk(loc: tuple) -> tuple[str, set[str], list[type[BaseModel]]]:
    """Dotted path as the user wrote it (without pydantic's union tags), the keys allowed
    beside the last element (for 'did you mean') and the models the last element may be."""
    models: list[type[BaseModel]] = [JobSpec]
    shown: list[str] = []
    parent_fields: set[str] = set()
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
    return ".".join(shown), parent_fields, models


def _kind_of(model: type[BaseModel]):
    field = model.model_fields.get("kind")
    return field.default if field else None


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
