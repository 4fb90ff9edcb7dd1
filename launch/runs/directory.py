"""A run directory's life: created with the resolved spec and DeepSpeed config before
training starts, closed with `summary.json` and the report whatever happened (results are
never lost). Every launcher calls these two."""
import contextlib
import shutil
import sys
from pathlib import Path

from launch.runs.files import DS_CONFIG, SPEC, SUMMARY, announce_run_dir, fresh_dir, to_json, write_atomic
from launch.runs.summary import summarize
from launch.spec.problems import Problem, SpecError
from launch.spec.yaml_io import parse_yaml
from launch.spec.schema import JobSpec
from launch.spec.deepspeed_config import build_deepspeed_config


def prepare_run_dir(spec: JobSpec, resume: Path | None = None) -> tuple[Path, dict]:
    """Create the run directory with spec.yaml and ds_config.json; returns (dir, DeepSpeed config).
    `resume`: the run directory of a run being resumed instead (launch/runs/resume.py checked
    `spec` against it), whose spec.yaml is written again: it may extend train.steps.
    Storage that cannot take them (a full disk) is bad input: SpecError, and no new run directory."""
    ds_config = build_deepspeed_config(spec)
    run_dir = None
    try:
        run_dir = resume or fresh_dir(spec.storage_dir(), spec.name)
        write_atomic(run_dir / SPEC, spec.to_yaml())
        write_atomic(run_dir / DS_CONFIG, to_json(ds_config, indent=2) + "\n")
    except OSError as err:
        if run_dir is not None and resume is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise SpecError([Problem("run.storage", f"cannot write the run directory in {spec.storage_dir()} ({err}); "
                                                "free some space there or choose another run.storage")]) from None
    announce_run_dir(run_dir)
    return run_dir, ds_config


def read_run_spec(run_dir: Path) -> dict:
    """A run directory's spec.yaml as the tree `launch run` wrote; SpecError naming RUN_DIR
    when it is not a run directory."""
    path = Path(run_dir) / SPEC
    if not path.is_file():
        raise SpecError([Problem(str(run_dir), f"not a run directory (no {SPEC}); give the directory "
                                               "`launch run` printed as `run directory: ...`")])
    tree = parse_yaml(path.read_text(), source=str(path))
    if not isinstance(tree, dict):
        raise SpecError([Problem(str(path), "not a job spec (a mapping of sections)")])
    return tree


def finish_run(run_dir: Path, rows: list[dict], info: dict, *, wall_time_s: float, error: str | None,
               interrupted: bool = False) -> None:
    """Write summary.json and the report, print the summary, and exit non-zero if training
    failed. An interrupted run (a stop signal; `steps` is the last logged step) returns: its
    launcher says how to resume and exits with the signal's status. A write that fails (a full
    disk) fails the run: the summary is printed all the same, the error says which file could
    not be written, and nothing is left half written."""
    from launch.runs.report import write_report  # matplotlib: not before training (a Ray driver imports it meanwhile)

    status = "interrupted" if interrupted else "failed" if error else "completed"
    summary = summarize(rows, info, wall_time_s=wall_time_s, status=status)
    if error:
        summary["error"] = error
    try:
        write_atomic(run_dir / SUMMARY, to_json(summary, indent=2) + "\n")
        write_report(run_dir)
    except OSError as err:
        error = "; ".join(filter(None, [error, f"could not write the run's summary and report: {err}"]))
        summary.update(status="failed", error=error)
        with contextlib.suppress(OSError):  # the reason, where it still fits
            write_atomic(run_dir / SUMMARY, to_json(summary, indent=2) + "\n")
    print_summary(summary, run_dir)
    if error:
        print(f"error: training failed: {error}", file=sys.stderr)
        raise SystemExit(1)


def print_summary(summary: dict, run_dir: Path) -> None:
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    print(f"\n== {summary['status']}: {summary['steps']} steps in {summary['wall_time_s']:.1f} s wall, "
          f"{summary['train_time_s']:.1f} s training ({summary['tokens_per_s'] or 0:,.0f} tokens/s)")
    print(f"   validation loss: final {fmt(summary['final_val_loss'])}, best {fmt(summary['best_val_loss'])}"
          + (f"; unigram baseline {fmt(summary['unigram_baseline'])} (nats/token)"
             if summary["unigram_baseline"] is not None else "")
          + (f"; accuracy {summary['final_val_accuracy']:.3f}" if summary["final_val_accuracy"] is not None else ""))
    announce_run_dir(run_dir, indent="   ")
