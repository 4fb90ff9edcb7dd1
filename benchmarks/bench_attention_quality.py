"""Short quality runs for every attention kind, same steps, seed and model for each: ListOps
accuracy (bidirectional kinds), stdlib-code validation loss (causal kinds) and Pathfinder
accuracy (configs/pathfinder.yaml: bidirectional and grid kinds, beside Long Range Arena's
published Pathfinder-32 accuracies where LRA has the kind).

    .venv/bin/python benchmarks/bench_attention_quality.py [--steps 300] [--workers 1]
        [--tasks listops,lm,pathfinder] [--kinds softmax,linear,...]

Each run is a real job (`mpiexec -n W python -m launch run ...` with the mpiexec
launcher, so no Ray start-up per run); figures come from each run's summary.json.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch.runs.files import SUMMARY, read_json, run_dir_in  # noqa: E402

LISTOPS_KINDS = ["softmax", "linear", "performer", "lara", "flash"]
LM_KINDS = ["softmax", "linear", "performer", "flash"]
PATHFINDER_KINDS = ["softmax", "linear", "performer", "rpe_fft", "ripple", "vars", "contextpool"]
# Test accuracy (%) on Pathfinder-32 (hard) in LRA's Table 1 (Tay et al., 2021), by our kind's name.
LRA_PATHFINDER32 = {"softmax": 71.40, "performer": 77.05, "linear": 75.30}


def run(spec: str, kind: str, args, storage: Path) -> dict:
    command = [str(Path(sys.executable).with_name("mpiexec")), "-n", str(args.workers), sys.executable, "-m",
               "launch", "run", spec, "--set", f"model.attention.kind={kind}", "--set", "distributed.launcher=mpi",
               "--set", f"distributed.num_workers={args.workers}", "--set", f"train.steps={args.steps}",
               "--set", f"train.eval_interval={args.steps}", "--set", f"run.storage={storage}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    run_dir = run_dir_in(done.stdout)
    if done.returncode != 0 or run_dir is None:
        return {"status": f"failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'})"}
    return read_json(run_dir / SUMMARY)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
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
            columns = columns + [("train s", "train_time_s", ".1f")]
            lra = task == "pathfinder"
            print(f"\n{title} ({spec}, {args.steps} steps)")
            print(f"{'kind':<12}" + "".join(f"{name:>10}" for name, _, _ in columns) + ("       LRA" if lra else ""))
            for kind in kinds:
                summary = run(spec, kind, args, Path(tmp))
                if summary["status"] != "completed":
                    print(f"{kind:<12}{summary['status']}")
                    continue
                published = f"{LRA_PATHFINDER32[kind]:>10.2f}" if kind in LRA_PATHFINDER32 else f"{'-':>10}"
                print(f"{kind:<12}" + "".join(f"{summary[key]:>10{fmt}}" for _, key, fmt in columns)
                      + (published if lra else ""), flush=True)


if __name__ == "__main__":
    main()
