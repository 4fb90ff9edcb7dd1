"""Short quality runs for every attention kind, same steps and model for each: ListOps
accuracy (bidirectional kinds) and stdlib-code validation loss (causal kinds).

    .venv/bin/python benchmarks/bench_attention_quality.py [--steps 300] [--workers 1]

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
    args = parser.parse_args()
    studies = [
        ("configs/listops.yaml", LISTOPS_KINDS, "ListOps: validation accuracy (10 classes)",
         [("accuracy", "final_val_accuracy", ".3f"), ("val loss", "final_val_loss", ".3f")]),
        ("configs/baseline_dense.yaml", LM_KINDS, "stdlib-code LM: validation loss (nats/byte)",
         [("val loss", "final_val_loss", ".3f")]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for spec, kinds, title, columns in studies:
            columns = columns + [("train s", "train_time_s", ".1f")]
            print(f"\n{title} ({spec}, {args.steps} steps)")
            print(f"{'kind':<12}" + "".join(f"{name:>10}" for name, _, _ in columns))
            for kind in kinds:
                summary = run(spec, kind, args, Path(tmp))
                if summary["status"] != "completed":
                    print(f"{kind:<12}{summary['status']}")
                    continue
                print(f"{kind:<12}" + "".join(f"{summary[key]:>10{fmt}}" for _, key, fmt in columns))


if __name__ == "__main__":
    main()
