"""`python -m launch resume RUN_DIR [--set train.steps=N]`: the spec a run is resumed with.

A resumed run continues the run directory's own job from its last complete checkpoint (each
backend finds it through its checkpoint store; several groups from the newest step every
group checkpointed, launch/backends/groups_resume.py), so its spec is the run's `spec.yaml`. The
one change allowed is a longer `train.steps`: the learning-rate schedule is then the one a
run launched with the new length has (see README, "Interrupted runs"). Any other difference
is refused with the keys that differ, before anything starts.
"""
from pathlib import Path

from compression.spec_types import shorten
from launch.runs.directory import read_run_spec
from launch.runs.files import SUMMARY, read_json
from launch.spec.problems import Problem, SpecError
from launch.spec.schema import JobSpec, validate_tree
from launch.spec.yaml_io import apply_overrides

EXTENSIBLE = "train.steps"


def resume_spec(run_dir: Path, overrides: list[str]) -> JobSpec:
    """The run's spec with `overrides` applied; SpecError if RUN_DIR is not a run directory,
    if the overrides change anything but extend train.steps, or if the run has completed
    and train.steps is not extended."""
    original = validate_tree(read_run_spec(run_dir))
    spec = validate_tree(apply_overrides(original.model_dump(mode="json"), list(overrides)))
    problems = spec_changes(original, spec) + backend_limits(original, spec)
    if not problems and read_json(Path(run_dir) / SUMMARY).get("status") == "completed" \
            and spec.train.steps == original.train.steps:
        problems.append(Problem(EXTENSIBLE, f"the run has completed its {original.train.steps} steps; nothing to "
                                            f"resume (extend it with --set {EXTENSIBLE}=N, N > "
                                            f"{original.train.steps})"))
    if problems:
        raise SpecError(problems)
    return spec


def spec_changes(original: JobSpec, spec: JobSpec) -> list[Problem]:
    """A problem for every key whose value differs, except train.steps made longer."""
    problems = []
    for key, (old, new) in sorted(differing_keys(original.model_dump(mode="json"), spec.model_dump(mode="json"))
                                  .items()):
        if key == EXTENSIBLE and new > old:
            continue
        if key == EXTENSIBLE:
            why = f"can only be extended ({old} -> {new} is not longer)"
        else:
            why = (f"differs from the run's spec.yaml ({shorten(old)} -> {shorten(new)}); a resumed run continues the "
                   f"run as it was, only {EXTENSIBLE} may be extended (start a new run to change it)")
        problems.append(Problem(key, why))
    return problems


def backend_limits(original: JobSpec, spec: JobSpec) -> list[Problem]:
    """What a flavour cannot resume: under Ray Tune a longer train.steps (the restored
    experiment keeps the stop criterion it was started with, and Tune does not resume
    finished trials)."""
    if original.population.backend == "tune" and spec.train.steps != original.train.steps:
        return [Problem(EXTENSIBLE, "a Ray Tune run resumes with the train.steps it was started with (Tune's "
                                    "restored experiment keeps its stop criterion); drop --set train.steps")]
    return []


def differing_keys(old: dict, new: dict, prefix: str = "") -> dict[str, tuple]:
    """Dotted key -> (old, new) for every leaf that differs (a key on one side only too)."""
    found = {}
    for key in old.keys() | new.keys():
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found.update(differing_keys(a, b, f"{path}."))
        elif a != b:
            found[path] = (a, b)
    return found
