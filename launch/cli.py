"""`python -m launch` (alias `sparsepop`): validate and run job specs.

Bad input exits with status 2 and lists every problem as `dotted.key: what is wrong`.
"""
import argparse
import sys
from pathlib import Path

from launch.spec.arguments import add_spec_args
from launch.spec.problems import SpecError, report_spec_error
from launch.study.sweep import add_arguments as add_sweep_arguments


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
        "report", help="write report.md with plots for a run directory (or a sweep's study directory)",
        description="Write report.md (validation loss per member with exploits marked, each hyperparameter's "
                    "schedule per member, the final population table) and its PNGs into RUN_DIR. Every job "
                    "already does this when it ends. Given a study directory (printed by `sweep`), (re)writes the "
                    "study report instead.")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (printed by `run`) or a study "
                                                           "directory (printed by `sweep`)")
    sweep = commands.add_parser(
        "sweep", help="run a grid of jobs (a spec with a `sweep:` mapping) and write the study report",
        description="Expand the spec's `sweep:` grid (dotted keys -> lists of values) into jobs, run them as a "
                    "Ray Tune grid search (each trial a job under mpiexec) and write results.csv and report.md "
                    "with plots into <run.storage>/<name>-sweep-<timestamp>/. See configs/compression_sweep.yaml.")
    add_spec_args(sweep)
    add_sweep_arguments(sweep)
    return parser


def write_report_for(directory: str) -> int:
    """report.md and its plots for a run directory, or for a sweep's study directory."""
    from launch.runs.files import METRICS, SUMMARY

    path = Path(directory)
    if (path / "results.csv").exists():
        from launch.study.report import write_study_report

        print(f"report: {write_study_report(path)}")
        return 0
    if not (path / METRICS).exists() and not (path / SUMMARY).exists():
        print(f"error: {directory}: not a run directory (no {METRICS} or {SUMMARY}) nor a study directory "
              "(no results.csv)", file=sys.stderr)
        return 2
    from launch.runs.report import write_report

    print(f"report: {write_report(path)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return write_report_for(args.run_dir)
    from launch.spec.schema import load_spec

    try:
        if args.command == "sweep":
            from launch.study.sweep import run_study

            return run_study(args.spec, args.overrides, dry_run=args.dry_run, max_concurrent=args.max_concurrent)
        spec = load_spec(args.spec, args.overrides)
        if args.command == "validate":
            print(spec.to_yaml(), end="")
            return 0
        from launch.backends import run_job

        run_job(spec)
        return 0
    except SpecError as err:
        return report_spec_error(err, args.spec)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
