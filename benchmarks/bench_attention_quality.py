"""Short quality runs for every attention kind, same steps, seed and model for each: ListOps
accuracy (configs/listops.yaml: bidirectional kinds, beside Long Range Arena's published
ListOps accuracies where LRA has the kind), stdlib-code validation loss (causal kinds) and
Pathfinder accuracy (configs/pathfinder.yaml: bidirectional and grid kinds, beside LRA's
published Pathfinder-32 accuracies where LRA has the kind).

    .venv/bin/python benchmarks/bench_attention_quality.py [--steps N] [--workers 1]
        [--tasks listops,lm,pathfinder] [--kinds softmax,linear,...]

Each run is a real job (`mpiexec -n W python -m launch run ...` with the mpiexec
launcher, so no Ray start-up per run); figures come from each run's summary.json (the best
member's), the learning curve (the best member at each of the spec's evaluations) from its
metrics.jsonl. Without --steps each spec runs as written (its own steps and evaluations);
--steps N runs N steps and evaluates once, at the end.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch.runs.files import METRICS, SUMMARY, read_json, read_metrics, run_dir_in  # noqa: E402

# Every kind that runs on a sequence without a grid (ripple needs one); the LM list keeps the causal ones.
LISTOPS_KINDS = ["softmax", "linear", "performer", "lara", "flash", "hypercube", "mra", "rpe_fft", "collaborative",
                 "vars", "contextpool"]
LM_KINDS = ["softmax", "linear", "performer", "flash", "hypercube", "rpe_fft", "collaborative"]
PATHFINDER_KINDS = ["softmax", "linear", "performer", "rpe_fft", "ripple", "vars", "contextpool"]
# Options a kind needs on a task's lengths, beside its defaults: MRA's defaults (blocks of 32, 8 exact blocks
# per row) are for thousands of tokens; ListOps' 128 tokens make 4 blocks, all of them exact. Blocks of 16 with
# half of each row's 8 blocks exact keep it an approximation.
KIND_OVERRIDES = {"listops": {"mra": ["model.attention.block_size=16", "model.attention.blocks_per_row=4"]}}
# Test accuracy (%) on Pathfinder-32 (hard) in LRA's Table 1 (Tay et al., 2021), by our kind's name.
LRA_PATHFINDER32 = {"softmax": 71.40, "performer": 77.05, "linear": 75.30}
# Test accuracy (%) on ListOps in LRA's Table 1 (Tay et al., 2021), by our kind's name.
LRA_LISTOPS = {"softmax": 36.37, "performer": 18.01, "linear": 16.13}


def run(spec: str, kind: str, overrides: list[str], args, storage: Path) -> tuple[dict, list[dict]]:
    """The run's summary (with `wall_s`, the whole command: data, start-up, evaluations) and
    its validation rows (the learning curve)."""
    command = [str(Path(sys.executable).with_name("mpiexec")), "-n", str(args.workers), sys.executable, "-m",
               "launch", "run", spec, "--set", f"model.attention.kind={kind}", "--set", "distributed.launcher=mpi",
               "--set", f"distributed.num_workers={args.workers}", "--set", f"run.storage={storage}"]
    command += [arg for override in overrides for arg in ("--set", override)]
    if args.steps is not None:
        command += ["--set", f"train.steps={args.steps}", "--set", f"train.eval_interval={args.steps}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    run_dir = run_dir_in(done.stdout)
    if done.returncode != 0 or run_dir is None:
        return {"status": f"failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'})"}, []
    return {**read_json(run_dir / SUMMARY), "wall_s": time.perf_counter() - started}, best_curve(run_dir / METRICS)


def best_curve(metrics: Path) -> list[dict]:
    """At each evaluation, the row of the member with the best metric (the highest accuracy where
    the task has one, else the lowest loss), as the summary's final figure picks the best member."""
    by_step: dict[int, list[dict]] = {}
    for row in read_metrics(metrics):
        if "val_loss" in row:
            by_step.setdefault(row["step"], []).append(row)

    def rank(row: dict) -> float:
        return -row["val_accuracy"] if row.get("val_accuracy") is not None else row["val_loss"]
    return [min(rows, key=rank) for _, rows in sorted(by_step.items())]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of every run (default: each spec's own train.steps and evaluations)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tasks", default="listops,lm", help="comma-separated: listops, lm, pathfinder")
    parser.add_argument("--kinds", default=None, help="comma-separated kinds to run (default: each task's list)")
    args = parser.parse_args()
    accuracy = [("accuracy", "final_val_accuracy", ".3f"), ("val loss", "final_val_loss", ".3f")]
    studies = {
        "listops": ("configs/listops.yaml", LISTOPS_KINDS, "ListOps: validation accuracy (10 classes)", accuracy),
        "lm": ("configs/baseline_dense.yaml", LM_KINDS, "stdlib-code LM: validation loss (nats/byte)",
               [("val loss", "final_val_loss", ".3f")]),
        "pathfinder": ("configs/pathfinder.yaml", PATHFINDER_KINDS,
                       "Pathfinder: validation accuracy (2 classes; LRA: Pathfinder-32 test accuracy, %)", accuracy),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            spec, kinds, title, columns = studies[task]
            kinds = [kind for kind in kinds if args.kinds is None or kind in args.kinds.split(",")]
            columns = columns + [("train s", "train_time_s", ".1f"), ("wall s", "wall_s", ".1f")]
            lra = {"pathfinder": LRA_PATHFINDER32, "listops": LRA_LISTOPS}.get(task)
            print(f"\n{title} ({spec}, {args.steps or 'its own'} steps)")
            print(f"{'kind':<14}" + "".join(f"{name:>10}" for name, _, _ in columns) + ("       LRA" if lra else ""))
            curves = {}
            for kind in kinds:
                overrides = KIND_OVERRIDES.get(task, {}).get(kind, [])
                summary, curves[kind] = run(spec, kind, overrides, args, Path(tmp))
                if summary["status"] != "completed":
                    print(f"{kind:<14}{summary['status']}")
                    continue
                published = f"{lra[kind]:>10.2f}" if lra and kind in lra else f"{'-':>10}"
                print(f"{kind:<14}" + "".join(f"{summary[key]:>10{fmt}}" for _, key, fmt in columns)
                      + (published if lra else "") + (f"  ({', '.join(overrides)})" if overrides else ""), flush=True)
            metric = columns[0][1].removeprefix("final_")  # val_accuracy or val_loss
            print(f"learning curve (the best member's {metric} at step):")
            for kind, curve in curves.items():
                print(f"  {kind:<14}" + " ".join(f"{row['step']}:{row[metric]:.3f}" for row in curve))


if __name__ == "__main__":
    main()
