"""Part 4 of benchmarks/device_check.py: a one-worker training job through the real worker
loop (`trainers.loop.Worker.run`, DeepSpeed, torch.distributed with one process: NCCL on a
GPU, gloo on CPU), with a checkpoint halfway, then a fresh Worker that resumes from that
checkpoint; its metric rows must reproduce the uninterrupted run's (timing fields excluded).

No Ray and no mpi4py: the run directory, the metric log and the checkpoint folders are
those of the mpiexec launcher (launch/backends/mpi.py), resuming as `launch resume` does.
"""
import json
import math
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_step_phases import one_process_worker  # noqa: E402
from trainers.loop import untimed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMING_FIELDS = ("tokens_per_s", "time_s")


def resuming_checkpoints(root: Path, keep: int):
    """The mpiexec launcher's checkpoint folders, for one rank, resuming from `latest.json`."""
    from launch.backends.mpi import DirectoryCheckpoints

    return DirectoryCheckpoints(root, rank=0, barrier=lambda: None, keep=keep, resume=True)


def training_spec(plan, runs: Path):
    from launch.spec.schema import load_spec
    from trainers.config import TrainConfig

    overrides = ["name=device-check", "distributed.num_workers=1", "distributed.resources_per_worker={CPU: 1}",
                 f"distributed.use_gpu={str(plan.device == 'cuda').lower()}", f"train.steps={plan.train_steps}",
                 f"run.checkpoint_interval={plan.train_steps // 2}", "run.keep_checkpoints=2",
                 f"train.log_interval={plan.log_interval}", f"train.eval_interval={plan.train_steps // 2}",
                 f"run.storage={runs}", *plan.training_overrides]
    if plan.precision != "fp32":
        if "precision" not in TrainConfig.model_fields:
            raise ValueError(f"--precision {plan.precision}: the spec schema has no train.precision yet")
        overrides.append(f"train.precision={plan.precision}")
    return load_spec(ROOT / "configs/baseline_dense.yaml", overrides)


def run_job(spec, *, resume_from: Path | None = None) -> list[dict]:
    """One job in a fresh run directory; with `resume_from`, that checkpoint folder is
    copied in first and the job resumes from it. Returns its metric rows."""
    from launch.runs.directory import prepare_run_dir
    from launch.runs.recorder import MetricsLog

    run_dir, _ = prepare_run_dir(spec)
    checkpoints = resuming_checkpoints(run_dir / "checkpoints", spec.run.keep_checkpoints)
    if resume_from is not None:
        shutil.copytree(resume_from, checkpoints.root / resume_from.name)
        (checkpoints.root / "latest.json").write_text(json.dumps({"folder": resume_from.name}) + "\n")
    metrics = MetricsLog(str(run_dir))
    one_process_worker(spec, untimed, reporter=metrics, checkpoints=checkpoints).run()
    metrics.snapshot()
    return metrics.rows


def differences(first: list[dict], second: list[dict]) -> float:
    """Largest absolute difference of any numeric field between matching rows (timing
    fields excluded); inf when the rows or their keys differ."""
    strip = lambda row: {k: v for k, v in row.items() if k not in TIMING_FIELDS}  # noqa: E731
    if len(first) != len(second):
        return math.inf
    largest = 0.0
    for a, b in zip(map(strip, first), map(strip, second)):
        if a.keys() != b.keys():
            return math.inf
        for key in a:
            if isinstance(a[key], (int, float)) and isinstance(b[key], (int, float)):
                largest = max(largest, abs(a[key] - b[key]))
            elif a[key] != b[key]:
                return math.inf
    return largest


def training_part(plan, runs: Path) -> dict:
    """Uninterrupted run, then a resume from its halfway checkpoint, both under `runs`;
    compares the rows past the checkpoint."""
    spec = training_spec(plan, runs)
    torch.use_deterministic_algorithms(True, warn_only=True)  # GPU kernels with atomics (embedding backward)
    try:
        full = run_job(spec)
        halfway = spec.train.steps // 2
        resumed = run_job(spec, resume_from=checkpoint_folder(Path(spec.storage_dir()), halfway))
    finally:
        torch.use_deterministic_algorithms(False)
    after = lambda rows: [row for row in rows if row["step"] > halfway]  # noqa: E731
    diff = differences(after(full), after(resumed))
    final = [row for row in full if row["step"] == spec.train.steps and "val_loss" in row]
    return {"steps": spec.train.steps, "checkpoint_step": halfway, "precision": plan.precision,
            "rows_compared": len(after(full)), "max_abs_diff": diff, "tolerance": plan.resume_tolerance,
            "reproduced": diff <= plan.resume_tolerance, "identical": diff == 0.0,
            "final_loss": full[-1]["loss"], "final_val_loss": final[-1]["val_loss"] if final else None,
            "tokens_per_s": full[-1]["tokens_per_s"], "train_time_s": full[-1]["time_s"]}


def checkpoint_folder(runs: Path, step: int) -> Path:
    """The step's checkpoint folder of the newest run under `runs` (the uninterrupted one)."""
    found = sorted(runs.glob(f"*/checkpoints/step_{step:08d}"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise RuntimeError(f"no checkpoint at step {step} under {runs}")
    return found[-1]
