"""The compression-tradeoff study: `python -m launch sweep SPEC [--dry-run]`.

A sweep spec is a job spec plus a top-level `sweep:` mapping of dotted keys to lists of
values; the grid is every combination:

    sweep:
      compression.method: [none, topk, randomk]
      compression.density: [0.1, 0.01]
      compression.error_feedback: [true, false]
      distributed.num_workers: [1, 2]

`sweep:` may also be a list of such mappings: their union is run (configs/compression_sweep.yaml
uses that to add "top-k without error feedback" without a random-k twin).

Expansion (`expand_grid`): every combination is applied to the base spec and validated by
`launch.spec.schema.validate_tree`, so a bad key or value is reported as `sweep.<key>: ...` and
nothing starts. A grid may not set a key and its parent (`train.lr` beside `train`): one would
silently override the other. Combinations that would run the same job are dropped, by this rule:
  - a method ignores the `compression.*` keys its entry in compression/methods.py does not
    read: method `none` (dense all-reduce) ignores every other `compression.*` key
    (density, error_feedback, scope, randomk_mode, value_dtype, warmup_steps);
  - method `topk` ignores `compression.randomk_mode`;
  - method `powersgd` ignores `compression.density` and `compression.randomk_mode`, the
    others ignore `compression.min_compression_rate`; `compression.rank` is a grid axis
    for powersgd only: the other methods' combinations are made without it (and so
    collapse to one trial);
  - everything else counts (a 1-worker run still compresses its own gradient, with error
    feedback, so its loss depends on the compression keys).
The first combination of each duplicate group is the one that runs (its spec.yaml is what
the user wrote); `--dry-run` lists the trials and what was dropped as a duplicate of what.

Running (`run_trials`): one Ray Tune grid search (`tune.Tuner`, a function trainable)
over the expanded trials. Each trial runs its job as a subprocess under the mpiexec
launcher, `mpiexec -n W python -m launch run <trial spec>`, inside a Tune trial that
reserves the job's resources as ONE bundle (W x resources_per_worker, via
`tune.with_resources`), so Tune runs as many trials at a time as the cluster has room for,
and the W ranks of a trial share one node (mpiexec starts them locally). Why not Ray Train
inside the trial: a job is then a plain process with its own run directory and exit status,
its timing carries no Ray Train start-up, and a failed trial cannot take the study down.
The cost: a trial's workers must fit on one node, and the study directory must be on
storage every node can see (or the cluster is one machine).

The study directory, `<run.storage>/<name>-sweep-<timestamp>/`:
  sweep.yaml         the sweep spec as resolved (base spec + `sweep:`)
  study.json         the trials (label, overrides, spec file), the dropped duplicates
  trials/NN-<label>.yaml  each trial's job spec;  trials/NN-<label>.log  its output
  runs/<name>-<label>-<timestamp>/  each trial's run directory (as `launch run` writes)
  tune/              Ray Tune's experiment directory
  results.csv        one row per trial (see RESULT_COLUMNS)
  report.md + PNGs   the study report (launch/study/report.py)
"""
from __future__ import annotations

import argparse
import copy
import csv
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from compression import METHODS, CompressionConfig
from compression.spec_types import shorten
from launch.backends.mpi_launcher import GFORKER, find_gforker, loopback_mpiexec
from launch.runs.files import METRICS, SUMMARY, fresh_dir, read_json, read_metrics, run_dir_in, write_atomic_with
from launch.spec.problems import Problem, SpecError
from launch.spec.yaml_io import apply_overrides, parse_yaml, read_spec_file, set_dotted

if TYPE_CHECKING:  # launch.spec.schema imports torch (via trainers/): loaded when a grid is expanded
    from launch.spec.schema import JobSpec

# Keys a sweep may not vary: the sweep sets them for every trial.
RESERVED_KEYS = {
    "name": "each trial's name is the spec's name plus the trial's label",
    "run.storage": "trials write their run directories under the study directory",
    "distributed.launcher": "every trial runs under mpiexec (launcher: mpi)",
    "sweep": "a sweep cannot sweep itself",
}
RANK_KEY = "compression.rank"  # the spec refuses it for methods that do not read it (all but powersgd)
WORKERS_KEY = "distributed.num_workers"

RESULT_COLUMNS = [
    "trial", "config", "status", "method", "randomk_mode", "density", "rank", "error_feedback", "workers",
    "value_dtype",
    "members", "steps", "final_val_loss", "best_val_loss", "bytes_sent_per_worker", "mb_sent_per_worker",
    "payload_bytes_per_step", "dense_bytes_per_step", "compression_ratio", "wall_time_s", "process_wall_s",
    "train_time_s", "step_time_s", "step_time_median_s", "step_time_min_s", "tokens_per_s", "run_dir", "log",
]


# ---------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Trial:
    index: int  # 1-based, in grid order
    label: str  # e.g. "topk-d0.01-ef-w2": the swept values that matter
    config: str  # the label without the worker count: trials of one configuration at several W
    overrides: dict[str, Any]  # swept key -> value, as written
    spec: JobSpec  # the job this trial runs (name, run.storage and launcher set by the sweep)

    @property
    def workers(self) -> int:
        return self.spec.distributed.num_workers

    def resources(self) -> dict[str, float]:
        """One bundle for the whole job: W x what each worker needs."""
        return {k: v * self.workers for k, v in self.spec.distributed.worker_resources().items()}

    @property
    def stem(self) -> str:
        return f"{self.index:02d}-{self.label}"


@dataclass
class Grid:
    base: JobSpec  # the spec without `sweep:`
    keys: list[str]
    trials: list[Trial]
    dropped: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (overrides, why)


def load_sweep(path: str | Path, overrides: list[str] = ()) -> tuple[dict, dict]:
    """Read a sweep spec; returns (base tree without `sweep`, the sweep mapping)."""
    path = Path(path)
    tree = parse_yaml(read_spec_file(path, what="sweep spec"), source=str(path))
    if not isinstance(tree, dict):
        raise SpecError([Problem(str(path), "a sweep spec is a job spec (a mapping of sections) plus `sweep:`; "
                                            "see configs/compression_sweep.yaml")])
    # `--set sweep.compression.density=[0.1]` sets one grid key (its name has dots of its own).
    grid_sets = [o for o in overrides if o.startswith("sweep.")]
    tree = apply_overrides(tree, [o for o in overrides if not o.startswith("sweep.")])
    sweep = tree.pop("sweep", None)
    if sweep is None:
        raise SpecError([Problem("sweep", "required key is missing: add a mapping of dotted keys to lists of "
                                          "values, e.g. sweep: {compression.method: [none, topk]}")])
    for item in grid_sets:
        key, sep, raw = item[len("sweep."):].partition("=")
        if not sep or not isinstance(sweep, dict):
            raise SpecError([Problem("--set", f"{item!r}: use --set sweep.KEY.PATH=[values] on a sweep that is "
                                              "one mapping")])
        sweep[key.strip()] = parse_yaml(raw, source=f"--set {item}")
    return tree, sweep


def expand_grid(base_tree: dict, sweep: Any, *, study_runs: Path | None = None) -> Grid:
    """Every combination of the sweep's values applied to the base spec, validated, with
    duplicates dropped (module docstring). `sweep` is one grid (a mapping) or a list of
    grids, run as their union. Raises SpecError naming the sweep key."""
    from launch.spec.schema import validate_tree

    grids = sweep if isinstance(sweep, list) else [sweep]
    prefixes = [f"sweep[{i}]" if isinstance(sweep, list) else "sweep" for i in range(len(grids))]
    problems = [p for grid, where in zip(grids, prefixes) for p in _sweep_shape_problems(grid, where)]
    if not grids:
        problems.append(Problem("sweep", "an empty list; give at least one grid"))
    if problems:
        raise SpecError(problems)
    keys = list(dict.fromkeys(k for grid in grids for k in grid))  # every swept key, first-seen order
    trials, dropped, seen, problems = [], [], {}, []
    for grid, where in zip(grids, prefixes):
        for values in itertools.product(*grid.values()):
            overrides = dict(zip(grid, values))
            tree = copy.deepcopy(base_tree)
            method = overrides.get("compression.method", _get_dotted(base_tree, "compression.method"))
            reads_rank = method in METHODS and "rank" in METHODS[method].reads
            applied = {k: v for k, v in overrides.items() if reads_rank or k != RANK_KEY}
            blocked = {k: b for k, v in applied.items() if (b := set_dotted(tree, k, copy.deepcopy(v)))}
            bad = [Problem(f"{where}.{k}", f"{path} holds a {kind}, not a section; check the key")
                   for k, (path, kind) in blocked.items()]
            problems += bad  # and validate the rest, so every problem is reported in one pass
            if isinstance(tree.setdefault("distributed", {}), dict):
                tree["distributed"]["launcher"] = "mpi"
            try:
                spec = validate_tree(tree)
            except SpecError as err:
                problems += [_name_the_key(p, overrides, where) for p in err.problems]
                continue
            if bad:
                continue
            ignored = ignored_by(spec.compression.method)
            identity = _identity(spec, ignored)
            if identity in seen:
                first = seen[identity]
                why = [k for k in overrides if k in ignored and overrides[k] != first.overrides.get(k)]
                dropped.append((overrides, f"same job as trial {first.index} ({first.label})"
                                + (f": method {spec.compression.method} ignores {', '.join(why)}" if why else "")))
                continue
            label, config = _labels(keys, overrides, spec, ignored)
            trial = Trial(len(trials) + 1, label, config, overrides, spec)
            seen[identity] = trial
            trials.append(trial)
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))  # each problem once, in order
    trials = _unique_labels(trials)
    base = trials[0].spec  # name and run.storage cannot be swept: every trial shares them
    return Grid(base, keys, [_finalize(t, base, study_runs) for t in trials], dropped)


def _sweep_shape_problems(grid: Any, where: str) -> list[Problem]:
    if not isinstance(grid, dict) or not grid:
        return [Problem(where, "must be a non-empty mapping of dotted spec keys to lists of values, e.g. "
                               "sweep: {compression.density: [0.1, 0.01]} (or a list of such mappings)")]
    problems = []
    for key, values in grid.items():
        at = f"{where}.{key}"
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
            problems.append(Problem(at, "a key is a dotted spec path such as compression.density"))
        elif key in RESERVED_KEYS or key.split(".")[0] == "sweep":
            problems.append(Problem(at, f"cannot be swept: {RESERVED_KEYS.get(key, RESERVED_KEYS['sweep'])}"))
        elif not isinstance(values, list) or not values:
            problems.append(Problem(at, f"must be a non-empty list of values to try, got {shorten(values)}"
                                        + (f"; write [{shorten(values)}]" if not isinstance(values, list) else "")))
        elif len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            problems.append(Problem(at, f"lists a value twice: {shorten(values)}"))
    # A key beside its parent: whichever is applied last wins, so the trial's label (made of
    # both) would lie, and a parent's value replaces the base spec's whole section.
    keys = [key for key in grid if isinstance(key, str)]
    for key in keys:
        for parent in (k for k in keys if key.startswith(k + ".")):
            problems.append(Problem(f"{where}.{key}", f"set beside its parent {where}.{parent}, which sets it too: a "
                                                      "trial would run one value under a label naming both; sweep "
                                                      f"{key} alone, or put its values inside {parent}'s"))
    return problems


def _name_the_key(problem: Problem, overrides: dict[str, Any], where: str = "sweep") -> Problem:
    """A problem caused by a swept key is reported as `sweep.<key>` with its value; any
    other problem of a combination names the combination."""
    for key, value in overrides.items():
        if problem.path == key or problem.path.startswith(key + ".") or key.startswith(problem.path + "."):
            message = problem.message if "(got" in problem.message else f"{problem.message} (value {shorten(value)})"
            return Problem(f"{where}.{key}", message)
    combo = ", ".join(f"{k}={v}" for k, v in overrides.items())
    return Problem(problem.path, f"{problem.message} (in the combination {combo})")


def ignored_by(method: str) -> tuple[str, ...]:
    """The compression.* keys `method` does not read (the duplicate rule of the module docstring)."""
    return tuple(f"compression.{k}" for k in CompressionConfig.model_fields if k not in ("method", *METHODS[method].reads))


def _identity(spec: JobSpec, ignored: tuple[str, ...]) -> str:
    tree = spec.model_dump(mode="json")
    for key in ignored:
        section, leaf = key.split(".")
        tree[section].pop(leaf, None)
    return json.dumps(tree, sort_keys=True)


def _short(key: str, value: Any) -> str:
    if key == "compression.method":
        return str(value)
    if key == "compression.density":
        return f"d{value:g}" if isinstance(value, (int, float)) else f"d{value}"
    if key == "compression.rank":
        return f"r{value}"
    if key == "compression.error_feedback":
        return "ef" if value else "noef"
    if key == WORKERS_KEY:
        return f"w{value}"
    if key in ("compression.value_dtype", "compression.randomk_mode", "compression.scope"):
        return str(value)
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        text = f"{value:g}"
    return f"{key.rsplit('.', 1)[-1]}{text}"


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-") or "trial"



def _labels(keys: list[str], overrides: dict[str, Any], spec: JobSpec,
            ignored: tuple[str, ...]) -> tuple[str, str]:
    """From every key any grid sweeps (the spec's value where this trial's grid does not
    set it), skipping what the method ignores; method, density or rank first, workers last,
    the rest in the order the grids list them."""
    tree = spec.model_dump(mode="json")
    parts = []
    for key in sorted(keys, key=_label_position):
        if key in ignored:
            continue
        if key in overrides:
            parts.append((key, _short(key, overrides[key])))
        elif (value := _get_dotted(tree, key)) is not _MISSING:
            parts.append((key, _short(key, value)))
    # Nothing that matters was swept (e.g. density alone, with method none): the method names it.
    fallback = spec.compression.method
    label = _clean("-".join(p for _, p in parts) or fallback)
    config = _clean("-".join(p for k, p in parts if k != WORKERS_KEY) or fallback)
    return label, config


def _label_position(key: str) -> int:
    """Where a key's part goes in a label (sorted() keeps the grids' order among equals)."""
    first = ("compression.method", "compression.density", RANK_KEY)
    return first.index(key) if key in first else len(first) + (key == WORKERS_KEY)


_MISSING = object()


def _get_dotted(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _unique_labels(trials: list[Trial]) -> list[Trial]:
    """Two trials whose labels collide after cleaning get their index appended."""
    counts = Counter(t.label for t in trials)
    return [t if counts[t.label] == 1 else replace(t, label=f"{t.label}-{t.index}", config=f"{t.config}-{t.index}")
            for t in trials]


def _finalize(trial: Trial, base: JobSpec, study_runs: Path | None) -> Trial:
    """The trial's job: named `<name>-<label>`, writing under the study directory."""
    from launch.spec.schema import validate_tree

    tree = trial.spec.model_dump(mode="json")
    tree["name"] = _clean(f"{base.name}-{trial.label}")
    if study_runs is not None:
        tree["run"]["storage"] = str(study_runs)
    return replace(trial, spec=validate_tree(tree))


# ---------------------------------------------------------------- dry run


def describe(grid: Grid) -> str:
    lines = [f"{len(grid.trials)} trial(s) from {len(grid.trials) + len(grid.dropped)} combination(s) of "
             f"{', '.join(grid.keys)}; each runs under mpiexec in a Ray Tune trial holding its resources"]
    width = max(len(t.label) for t in grid.trials)
    for t in grid.trials:
        res = ", ".join(f"{v:g} {k}" for k, v in t.resources().items())
        values = ", ".join(f"{k}={v}" for k, v in t.overrides.items())
        lines.append(f"  {t.index:2d}  {t.label:<{width}}  mpiexec -n {t.workers}  [{res}]  {values}")
    if grid.dropped:
        lines.append(f"{len(grid.dropped)} duplicate combination(s) dropped:")
        for overrides, why in grid.dropped:
            lines.append("      " + ", ".join(f"{k}={v}" for k, v in overrides.items()) + f"  -> {why}")
    return "\n".join(lines)


# ---------------------------------------------------------------- running the trials


def check_mpiexec() -> None:
    if find_gforker() is None:
        raise SpecError([Problem("sweep", f"trials run under {GFORKER}, which was not found beside the Python "
                                          "interpreter or on PATH; install the `mpich` wheel (pip install mpich)")])


def trial_command(t: dict, environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """(command, environment) of trial `t`'s job: its ranks on this node, listening on
    loopback only, as an mpiexec run on one machine is started (launch/backends/mpi_launcher.py)."""
    threads = max(1, int(t["cpus_per_worker"]))
    env = {**environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return loopback_mpiexec(t["workers"], [sys.executable, "-m", "launch", "run", t["spec_file"]], env)


def run_one_trial(config: dict) -> None:
    """Tune's function trainable: run one job under mpiexec, report its outcome."""
    from ray import tune

    t = config["trial"]
    cmd, env = trial_command(t, os.environ)
    print(f"[sweep] trial {t['index']}/{t['count']} {t['label']}: started; log {t['log']}", flush=True)
    started = time.perf_counter()
    with open(t["log"], "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=t["cwd"], env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    elapsed = time.perf_counter() - started
    run_dir = run_dir_in(Path(t["log"]).read_text(errors="replace"))
    summary = read_json(run_dir / SUMMARY) if run_dir else {}
    status = summary.get("status", "failed") if rc == 0 else "failed"
    val = summary.get("final_val_loss")
    print(f"[sweep] trial {t['index']}/{t['count']} {t['label']}: {status} in {elapsed:.0f} s"
          + (f", final val loss {val:.4f}" if isinstance(val, (int, float)) else "")
          + ("" if rc == 0 else f" (exit status {rc}; see {t['log']})"), flush=True)
    outcome = {"label": t["label"], "returncode": rc, "status": status, "run_dir": str(run_dir or ""),
               "process_wall_s": round(elapsed, 2),
               "final_val_loss": val if isinstance(val, (int, float)) else float("nan")}
    tune.report(outcome)


def check_trials_fit(trials: list[Trial]) -> None:
    """Every trial's bundle must fit on one node (its ranks start there under mpiexec)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problems = []
    for t in trials:
        need = t.resources()
        if not any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
            biggest = max(nodes, key=lambda n: n.get("CPU", 0.0)) if nodes else {}
            have = ", ".join(f"{biggest.get(k, 0.0):g} {k}" for k in need)
            problems.append(Problem(
                f"sweep.{WORKERS_KEY}" if WORKERS_KEY in t.overrides else WORKERS_KEY,
                f"trial {t.label} needs {', '.join(f'{v:g} {k}' for k, v in need.items())} on one node (its "
                f"{t.workers} ranks start there under mpiexec), but the largest node has {have}; lower the worker "
                "count or resources_per_worker"))
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))


def _trial_name(trial) -> str:
    t = trial.config["trial"]
    return f"{t['index']:02d}-{t['label']}"


def run_trials(grid: Grid, study_dir: Path, *, max_concurrent: int | None = None) -> dict[str, dict]:
    """One Tune grid search over the trials (Ray already connected); returns each trial's
    outcome by label."""
    from ray import tune

    configs = []
    for t in grid.trials:
        configs.append({"index": t.index, "count": len(grid.trials), "label": t.label, "workers": t.workers,
                        "resources": t.resources(), "cwd": os.getcwd(),
                        "cpus_per_worker": t.spec.distributed.worker_resources().get("CPU", 1.0),
                        "spec_file": str(study_dir / "trials" / f"{t.stem}.yaml"),
                        "log": str(study_dir / "trials" / f"{t.stem}.log")})
    trainable = tune.with_resources(
        run_one_trial, resources=lambda config: tune.PlacementGroupFactory([config["trial"]["resources"]]))
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        # Tune's own status tables would drown the one line per trial start and end.
        run_config=tune.RunConfig(name="tune", storage_path=str(study_dir), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    print(f"Ray Tune: {len(configs)} trial(s), as many at a time as resources allow; Tune's experiment "
          f"directory {study_dir / 'tune'}", flush=True)
    outcomes = {}
    for result in tuner.fit():
        label = result.config["trial"]["label"]
        outcome = dict(result.metrics or {})
        if result.error is not None:
            outcome.update(status="failed", error=f"{type(result.error).__name__}: {result.error}")
        outcomes[label] = outcome
    return outcomes


# ---------------------------------------------------------------- results.csv


def result_row(trial: Trial, outcome: dict, *, log: Path) -> dict:
    """One row of results.csv from the trial's spec, its outcome and its run directory."""
    spec, comp = trial.spec, trial.spec.compression
    run_dir = Path(outcome["run_dir"]) if outcome.get("run_dir") else None
    summary = read_json(run_dir / SUMMARY) if run_dir else {}
    rows = _step_rows(run_dir / METRICS) if run_dir else []
    last_step = rows[-1]["step"] if rows else None
    last = [r for r in rows if r["step"] == last_step]
    steps = summary.get("steps") or last_step or 0
    train_time = rows[-1].get("time_s") if rows else summary.get("train_time_s")
    sent = summary.get("bytes_sent_per_worker")
    dense, reads = comp.method == "none", METHODS[comp.method].reads
    row = {
        "trial": trial.label, "config": trial.config,
        "status": outcome.get("status") or summary.get("status") or "failed",
        "method": comp.method,
        "randomk_mode": comp.randomk_mode if "randomk_mode" in reads else "",
        # dense sends every coordinate; PowerSGD sends rank-r factors, no density
        "density": 1.0 if dense else comp.density if "density" in reads else None,
        "rank": comp.rank,
        "error_feedback": "" if dense else comp.error_feedback,
        "workers": spec.distributed.num_workers,
        "value_dtype": "fp32" if dense else comp.value_dtype,
        "members": spec.population.size, "steps": steps,
        "final_val_loss": summary.get("final_val_loss"), "best_val_loss": summary.get("best_val_loss"),
        "bytes_sent_per_worker": sent,
        "mb_sent_per_worker": round(sent / 1e6, 4) if sent is not None else None,
        # What one worker sends in one (compressed) step: every member's payload.
        "payload_bytes_per_step": sum(r["bytes_sent"] for r in last) if last else None,
        "dense_bytes_per_step": sum(r["dense_bytes"] for r in last) if last else None,
        "compression_ratio": summary.get("compression_ratio"),
        "wall_time_s": summary.get("wall_time_s"), "process_wall_s": outcome.get("process_wall_s"),
        "train_time_s": round(train_time, 4) if train_time is not None else None,
        "step_time_s": round(train_time / steps, 6) if train_time and steps else None,
        **_window_step_times(rows),
        "tokens_per_s": summary.get("tokens_per_s"),
        "run_dir": str(run_dir) if run_dir else "", "log": str(log),
    }
    with_column = {WORKERS_KEY, *(f"compression.{column}" for column in RESULT_COLUMNS)}
    for key, value in trial.overrides.items():  # other swept keys get a column of their own
        if key not in with_column:
            row[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return row


def _window_step_times(rows: list[dict]) -> dict[str, float | None]:
    """Seconds per step in each log interval (consecutive logged steps): their median, and
    their minimum, the interval least disturbed by other load on the machine; the mean over
    the run is step_time_s."""
    points = sorted({(r["step"], r["time_s"]) for r in rows if isinstance(r.get("time_s"), (int, float))})
    windows = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(points, points[1:]) if s1 > s0 and t1 > t0]
    if not windows:
        return {"step_time_median_s": None, "step_time_min_s": None}
    return {"step_time_median_s": round(statistics.median(windows), 6), "step_time_min_s": round(min(windows), 6)}


def _step_rows(path: Path) -> list[dict]:
    """The metric rows of training steps (with their byte counts)."""
    return [row for row in read_metrics(path) if isinstance(row.get("step"), int) and "bytes_sent" in row]


def write_results_csv(rows: list[dict], path: Path) -> Path:
    extra = [k for r in rows for k in r if k not in RESULT_COLUMNS]
    columns = RESULT_COLUMNS + list(dict.fromkeys(extra))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})

    return write_atomic_with(path, write)


# ---------------------------------------------------------------- the command


def write_study_files(grid: Grid, study_dir: Path, base_tree: dict, sweep: dict, source: str) -> None:
    (study_dir / "trials").mkdir(exist_ok=True)
    (study_dir / "sweep.yaml").write_text(yaml.safe_dump({**base_tree, "sweep": sweep}, sort_keys=False))
    for t in grid.trials:
        (study_dir / "trials" / f"{t.stem}.yaml").write_text(t.spec.to_yaml())
    study = {"name": grid.base.name, "source": source, "keys": grid.keys,
             "trials": [{"index": t.index, "label": t.label, "config": t.config, "workers": t.workers,
                         "overrides": t.overrides, "spec_file": f"trials/{t.stem}.yaml"} for t in grid.trials],
             "dropped": [{"overrides": o, "reason": why} for o, why in grid.dropped]}
    (study_dir / "study.json").write_text(json.dumps(study, indent=2, default=str) + "\n")


def run_study(spec_path: str, overrides: list[str] = (), *, dry_run: bool = False,
              max_concurrent: int | None = None) -> int:
    base_tree, sweep = load_sweep(spec_path, overrides)
    grid = expand_grid(base_tree, sweep)
    print(describe(grid), flush=True)
    if dry_run:
        return 0
    from launch.backends.ray_session import connect_ray

    check_mpiexec()
    # Every trial's start and end line, even when they read alike (Ray folds repeated lines).
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    connect_ray()
    check_trials_fit(grid.trials)  # before anything is written
    study_dir = fresh_dir(grid.base.storage_dir(), f"{grid.base.name}-sweep")
    grid = expand_grid(base_tree, sweep, study_runs=study_dir / "runs")
    print(f"study directory: {study_dir}", flush=True)
    write_study_files(grid, study_dir, base_tree, sweep, str(spec_path))
    started = time.perf_counter()
    outcomes = run_trials(grid, study_dir, max_concurrent=max_concurrent)
    rows = [result_row(t, outcomes.get(t.label, {"status": "failed"}), log=study_dir / "trials" / f"{t.stem}.log")
            for t in grid.trials]
    write_results_csv(rows, study_dir / "results.csv")
    from launch.study.report import write_study_report

    report = write_study_report(study_dir)
    failed = [r["trial"] for r in rows if r["status"] != "completed"]
    print(f"\n== sweep {'completed' if not failed else 'finished with failures'}: {len(rows)} trial(s) in "
          f"{time.perf_counter() - started:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    print(f"   results: {study_dir / 'results.csv'}\n   report:  {report}\n   study directory: {study_dir}",
          flush=True)
    return 1 if failed else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="print the expanded trials (and the duplicates dropped) and exit")
    parser.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                        help="at most N trials at a time (default: as many as the cluster's resources allow)")
