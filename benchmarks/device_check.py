"""The prepared device check (issue 17): one command, four timed parts, one JSON file and
one markdown table. Under 8 minutes (budgeted; no GPU run has been made yet) on one GPU; no Ray (nor mpi4py) is imported.

    python benchmarks/device_check.py --device cuda --out OUT      # docs/gpu.md: how, on a bare machine
    python benchmarks/device_check.py --device cpu --out OUT       # small sizes
    python benchmarks/device_check.py --device cpu --quick --out OUT --parts 1,4

  1 population overhead time(P) / (P x time(1)), P = 1, 4, 16, 64, bf16 autocast, for the
    dense baseline model and one ~10x larger (bench_population.py)
  2 forward + backward of every attention kind against SDPA, 1K .. 32K tokens (bench_attention.py)
  3 step phases of configs/netns_bench.yaml's model (bench_step_phases.py) and the projected
    speedup of top-k / random-k at density 0.01 over dense at 1 and 10 Gbit/s, W = 2 .. 64
  4 a 50-step one-worker training job through the worker loop and DeepSpeed, checkpointed
    halfway, and a resume that must reproduce its metric rows (timing fields excluded)

A part that fails records its error in the JSON and the table; the others still run. The
exit status is 1 when a part failed or the resume did not reproduce the metrics.
Writes OUT/device_check.json and OUT/device_check.md.
"""
import argparse
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_population import Sizes  # noqa: E402

PARTS = {1: "population overhead", 2: "attention kinds", 3: "step phases and projection", 4: "training and resume"}


@dataclass
class Plan:
    """Every size the parts use, per device (and --quick)."""

    device: str
    members: list = field(default_factory=lambda: [1, 4, 16, 64])
    population_sizes: dict = field(default_factory=lambda: {
        "baseline": Sizes(), "10x": Sizes(d_model=256, n_layers=6, n_heads=4)})
    warmup: int = 2
    repeats: int = 5
    lengths: list = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384, 32768])
    attention_max_seconds: float = 1.0
    phases_overrides: list = field(default_factory=list)
    phase_steps: int = 10
    phase_skip: int = 3
    train_steps: int = 50
    log_interval: int = 5
    training_overrides: list = field(default_factory=lambda: ["train.eval_batches=8"])
    precision: str = "fp32"
    resume_tolerance: float = 1e-5  # largest |difference| of a metric between the run and its resume


def make_plan(device: str, quick: bool, precision: str) -> Plan:
    if device == "cuda":
        return Plan(device, precision=precision)
    if not quick:  # a CPU: the same parts at sizes two cores finish in a few minutes
        return Plan(device, members=[1, 4, 16], warmup=1, repeats=3,
                    population_sizes={"baseline": Sizes(batch=2, seq_len=32),
                                      "10x": Sizes(d_model=256, n_layers=6, n_heads=4, batch=2, seq_len=32)},
                    lengths=[128, 256, 512], attention_max_seconds=1.0, phase_steps=4, phase_skip=1,
                    training_overrides=["train.micro_batch_size=4", "task.seq_len=64", "train.eval_batches=2"],
                    precision=precision, resume_tolerance=0.0)
    return Plan(device, members=[1, 2], warmup=1, repeats=1,  # --quick: the unit test's form
                population_sizes={"baseline": Sizes(d_model=32, n_layers=1, n_heads=2, batch=1, seq_len=16),
                                  "10x": Sizes(d_model=96, n_layers=2, n_heads=2, batch=1, seq_len=16)},
                lengths=[64, 128], attention_max_seconds=0.2,
                phases_overrides=["model.d_model=64", "model.n_layers=2", "model.n_heads=2", "task.seq_len=32"],
                phase_steps=3, phase_skip=1, train_steps=10, log_interval=1,
                training_overrides=["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "task.seq_len=32",
                                    "train.micro_batch_size=2", "train.eval_batches=1"],
                precision=precision, resume_tolerance=0.0)


def run_part(number: int, plan: Plan, runs: Path) -> dict:
    from device_check_parts import attention_part, phases_part, population_part
    from device_check_training import training_part

    started = time.perf_counter()
    try:
        functions = {1: population_part, 2: attention_part, 3: phases_part, 4: lambda p: training_part(p, runs)}
        result = {"ok": True, **functions[number](plan)}
    except Exception as err:  # noqa: BLE001 - the other parts still run
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(err).__name__}: {err}"[:500]}
    result["seconds"] = time.perf_counter() - started
    print(f"[device_check] part {number} ({PARTS[number]}): {'ok' if result['ok'] else 'FAILED'} "
          f"in {result['seconds']:.1f} s", flush=True)
    return result


def environment(device: str) -> dict:
    import torch

    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "torch": torch.__version__, "device": device, "cpu_threads": torch.get_num_threads()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", required=True, type=Path, help="folder for device_check.json / .md and the runs")
    parser.add_argument("--runs", type=Path, help="folder for part 4's run directories (default OUT/runs)")
    parser.add_argument("--parts", default="1,2,3,4", help="comma-separated part numbers")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the unit test); CPU only")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="part 4: bf16 passes --set train.precision=bf16 (needs that spec key)")
    args = parser.parse_args()
    if args.quick and args.device == "cuda":
        parser.error("--quick is the CPU unit test's form")
    if args.device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # part 4: deterministic cuBLAS
    os.environ["DS_ACCELERATOR"] = args.device  # --device decides, whatever the caller's environment says
    args.out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(args.device, args.quick, args.precision)
    report = {"environment": environment(args.device), "quick": args.quick, "parts": {}}
    for number in sorted(int(n) for n in args.parts.split(",")):
        report["parts"][str(number)] = run_part(number, plan, args.runs or args.out / "runs")
    report["ray_imported"] = "ray" in sys.modules
    (args.out / "device_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    from device_check_table import markdown

    (args.out / "device_check.md").write_text(markdown(report))
    print(f"[device_check] wrote {args.out / 'device_check.json'} and {args.out / 'device_check.md'}")
    failed = [n for n, part in report["parts"].items() if not part["ok"] or part.get("reproduced") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
