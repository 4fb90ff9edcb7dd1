"""`python -m launch` (alias `sparsepop`): validate and run job specs.

Bad input exits with status 2 and lists every problem as `dotted.key: what is wrong`.
"""
import argparse
import gc
import sys
from pathlib import Path
from typing import NoReturn

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
    resume = commands.add_parser(
        "resume", help="continue an interrupted or failed run from its last checkpoint",
        description="Continue the job of RUN_DIR (printed by `run`), whose driver is gone, from its last complete "
                    "checkpoint, into the same run directory: the metrics of the finished run equal an "
                    "uninterrupted run's (timing aside). The spec is the run's spec.yaml; only train.steps may "
                    "be extended. An mpiexec job resumes under mpiexec with the same number of ranks; the "
                    "groups of population.groups > 1 all from the newest step every group checkpointed.")
    resume.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (printed by `run`)")
    resume.add_argument("--set", dest="overrides", action="append", default=[], metavar="train.steps=N",
                        help="train for N steps in all instead of the run's train.steps (N larger); the "
                             "learning-rate schedule becomes that of a run launched with N steps")
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
    report.add_argument("--latency-us", type=float, default=None, metavar="ALPHA",
                        help="study report: the network model's latency per message in microseconds "
                             "(default: launch/study/netmodel.py's)")
    sweep = commands.add_parser(
        "sweep", help="run a grid of jobs (a spec with a `sweep:` mapping) and write the study report",
        description="Expand the spec's `sweep:` grid (dotted keys -> lists of values) into jobs, run them as a "
                    "Ray Tune grid search (each trial a job under mpiexec) and write results.csv and report.md "
                    "with plots into <run.storage>/<name>-sweep-<timestamp>/. See configs/compression_sweep.yaml.")
    add_spec_args(sweep)
    add_sweep_arguments(sweep)
    export = commands.add_parser(
        "export", help="write one member as a plain single model (safetensors + config.json)",
        description="Write one member of a finished run as a plain single model without the member axis: "
                    "model.safetensors and config.json, loadable with trainers.export.load_exported (PyTorch "
                    "alone). Default: the best member (lowest final validation loss) into RUN_DIR/export-member<N>/.")
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (printed by `run`)")
    export.add_argument("--member", default="best", help="`best` (default) or a member id")
    export.add_argument("--out", default=None, metavar="DIR", help="where to write the export")
    sample = commands.add_parser(
        "sample", help="generate text from a language-model member",
        description="Generate from a language-model member of a run (exported on the way) or from an export "
                    "folder: bytes for stdlib_code, token ids (space separated) for token_file.")
    sample.add_argument("source", metavar="RUN_DIR|EXPORT_DIR")
    sample.add_argument("--member", default="best", help="with a run directory: `best` (default) or a member id")
    sample.add_argument("--prompt", required=True, help="the text (or token ids) to continue")
    sample.add_argument("--tokens", type=int, default=200, help="how many tokens to generate (default 200)")
    sample.add_argument("--temperature", type=float, default=0.8, help="0: always the most likely (default 0.8)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    return parser


def write_report_for(directory: str, latency_us: float | None = None) -> int:
    """report.md and its plots for a run directory, or for a sweep's study directory."""
    from launch.runs.files import METRICS, SUMMARY

    path = Path(directory)
    if (path / "results.csv").exists():
        from launch.study.report import write_study_report

        latency = {} if latency_us is None else {"latency_s": latency_us * 1e-6}
        print(f"report: {write_study_report(path, **latency)}")
        return 0
    if not (path / METRICS).exists() and not (path / SUMMARY).exists():
        print(f"error: {directory}: not a run directory (no {METRICS} or {SUMMARY}) nor a study directory "
              "(no results.csv)", file=sys.stderr)
        return 2
    from launch.runs.report import write_report

    print(f"report: {write_report(path)}")
    return 0


def export_or_sample(args: argparse.Namespace) -> int:
    from launch.runs.export import export_member, sample_text

    try:
        if args.command == "export":
            print(f"export: {export_member(Path(args.run_dir), args.member, args.out and Path(args.out))}")
        else:
            print(sample_text(Path(args.source), member=args.member, prompt=args.prompt, tokens=args.tokens,
                              temperature=args.temperature, seed=args.seed))
    except SpecError as err:
        return report_spec_error(err, args.run_dir if args.command == "export" else args.source)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return write_report_for(args.run_dir, args.latency_us)
    if args.command in ("export", "sample"):
        return export_or_sample(args)
    from launch.spec.schema import load_spec

    try:
        if args.command == "sweep":
            from launch.study.sweep import run_study

            return run_study(args.spec, args.overrides, dry_run=args.dry_run, max_concurrent=args.max_concurrent)
        if args.command == "resume":
            from launch.backends import run_job
            from launch.runs.resume import resume_spec

            run_job(resume_spec(Path(args.run_dir), args.overrides), resume=Path(args.run_dir).resolve())
            return 0
        spec = load_spec(args.spec, args.overrides)
        if args.command == "validate":
            print(spec.to_yaml(), end="")
            return 0
        from launch.backends import run_job

        run_job(spec)
        return 0
    except SpecError as err:
        return report_spec_error(err, args.run_dir if args.command == "resume" else args.spec)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run(argv: list[str] | None = None) -> NoReturn:
    """The process's entry point (`python -m launch`, `sparsepop`): `main`, then exit.

    Before exiting, every object is frozen out of the cyclic garbage collector: Python's
    finalization then skips its collections over the heap that torch, Ray and DeepSpeed
    built (over 300,000 objects in a driver), which took 1.06 s after a job's last line
    (idle, 2026-12-01) and 7-15 s under heavy load, for nothing: the process ends. atexit handlers
    (Ray's shutdown, logging's flush) still run, the standard streams are still flushed,
    and objects freed by reference counting are still finalized; only reference cycles
    alive at exit are not collected, which Python does not promise to do at exit anyway.
    Not in `main`, which tests call in their own process."""
    try:
        status = main(argv)
    finally:
        gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    run()
