"""`python -m launch` (alias `sparsepop`): validate and run job specs.

Bad input exits with status 2 and lists every problem as `dotted.key: what is wrong`.
"""
import argparse
import sys

from launch.errors import SpecError


def add_spec_args(parser: argparse.ArgumentParser, *, default_spec: str | None = None) -> None:
    parser.add_argument("spec", nargs="?" if default_spec else None, default=default_spec,
                        help="path of a YAML job spec, e.g. configs/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override one spec value (repeatable); VALUE is read as a YAML scalar, "
                             "e.g. --set train.lr=1e-3 --set distributed.num_workers=1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m launch",
        description="sparsepop: population-based training and compressed gradient exchange on Ray + DeepSpeed.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run a job spec to completion",
        description="Run a job: joins the Ray cluster this process belongs to (under `ray job submit`, or a "
                    "head started with `ray start` on this machine), or starts a local Ray instance. Prints "
                    "the run directory at start and end.")
    add_spec_args(run)
    validate = commands.add_parser(
        "validate", help="print the fully resolved spec (defaults filled) or its errors",
        description="Validate a job spec without running anything: prints the resolved spec as YAML, or "
                    "every problem with its dotted key path (exit status 2).")
    add_spec_args(validate)
    report = commands.add_parser(
        "report", help="write report.md with plots for a run directory",
        description="Write report.md (validation loss per member with exploits marked, each hyperparameter's "
                    "schedule per member, the final population table) and its PNGs into RUN_DIR. Every job "
                    "already does this when it ends.")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (printed by `run`)")
    sweep = commands.add_parser(
        "sweep", help="run a grid of jobs (a spec with a `sweep:` mapping) and write the study report",
        description="Expand the spec's `sweep:` grid (dotted keys -> lists of values) into jobs, run them as a "
                    "Ray Tune grid search (each trial a job under mpiexec) and write results.csv and report.md "
                    "with plots into <run.storage>/<name>-sweep-<timestamp>/. See configs/compression_sweep.yaml.")
    add_spec_args(sweep)
    from launch.sweep import add_arguments as add_sweep_arguments

    add_sweep_arguments(sweep)
    return parser


def report_spec_error(err: SpecError, spec_path: str) -> int:
    """Print every problem of a spec; returns the exit status for bad input (2)."""
    count = len(err.problems)
    print(f"error: {spec_path}: {count} problem{'s' if count > 1 else ''}; nothing was started", file=sys.stderr)
    for problem in err.problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def write_report_for(run_dir: str) -> int:
    from pathlib import Path

    from launch.report import write_report

    if not (Path(run_dir) / "metrics.jsonl").exists() and not (Path(run_dir) / "summary.json").exists():
        print(f"error: {run_dir}: not a run directory (no metrics.jsonl or summary.json)", file=sys.stderr)
        return 2
    print(f"report: {write_report(Path(run_dir))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return write_report_for(args.run_dir)
    if args.command == "sweep":
        from launch.sweep import main as sweep_main

        return sweep_main(args)
    from launch.spec import load_spec

    try:
        spec = load_spec(args.spec, args.overrides)
        if args.command == "validate":
            print(spec.to_yaml(), end="")
            return 0
        if spec.distributed.launcher == "mpi":
            from launch.mpi_job import run_mpi_job

            run_mpi_job(spec)
        else:
            from launch.job import run_ray_job

            run_ray_job(spec)
        return 0
    except SpecError as err:
        return report_spec_error(err, args.spec)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
