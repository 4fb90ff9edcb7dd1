"""The whole PBT job, vectorized against the classic way: one PBT schedule
(configs/pbt_backends.yaml) through population.backend vectorized (all members in one
population-batched model) and tune (one Ray Tune trial per member, Ray Tune's PBT
scheduler), each as `python -m launch run` from a fresh local Ray, side by side.

    .venv/bin/python benchmarks/bench_pbt_backends.py [--members 4 8] [--spec configs/pbt_backends.yaml]

Prints per population size both wall times (process start to exit: Ray start, workers,
DeepSpeed, data, training, evaluation, checkpoints, the report), their ratio, the
vectorized job's time in training steps, and each backend's best final validation loss
(the schedules match; the trajectories differ because the data order per member does).
Tune trials get half a CPU each so that more than two run at once on a 2-core machine.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch.runs.files import SUMMARY, run_dir_in  # noqa: E402

BACKEND_OVERRIDES = {
    "vectorized": [],
    "tune": ["population.backend=tune", "distributed.resources_per_worker.CPU=0.5"],
}


def run_job(spec: str, members: int, backend: str, storage: Path) -> dict:
    overrides = [f"population.size={members}", f"run.storage={storage}", *BACKEND_OVERRIDES[backend]]
    command = [sys.executable, "-m", "launch", "run", spec, *(arg for o in overrides for arg in ("--set", o))]
    # A fresh local Ray per job, never a cluster left running on this machine.
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    run_dir = run_dir_in(done.stdout + done.stderr)
    if done.returncode != 0 or run_dir is None:
        raise SystemExit(f"{backend} job with {members} members failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((run_dir / SUMMARY).read_text())
    return {"wall_s": wall, "train_s": summary["train_time_s"], "best_val": summary["final_val_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--spec", default="configs/pbt_backends.yaml")
    args = parser.parse_args()
    print(f"{args.spec}, one fresh local Ray per job; wall = `launch run` start to exit\n")
    print("| members | vectorized wall s | of which training steps s | tune wall s | tune / vectorized "
          "| best final val loss (vectorized / tune) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-pbt-") as storage:
        for members in args.members:
            vec = run_job(args.spec, members, "vectorized", Path(storage))
            tune = run_job(args.spec, members, "tune", Path(storage))
            print(f"| {members} | {vec['wall_s']:.1f} | {vec['train_s']:.1f} | {tune['wall_s']:.1f} "
                  f"| {tune['wall_s'] / vec['wall_s']:.1f}x | {vec['best_val']:.3f} / {tune['best_val']:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
