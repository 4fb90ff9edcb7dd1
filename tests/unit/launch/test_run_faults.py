"""The run directory under faults (launch/runs/): strict JSON (a NaN loss as null), whole
lines or nothing on a full disk, no temporary files left, the recorder stopping the run on
a failed write, summary.json and the report from rows with non-finite losses, the failure
history that stops endless restarts. The full-disk cases run on a small tmpfs (root only)."""
import errno
import json
import math
from pathlib import Path

import pytest

from launch.runs.directory import finish_run
from launch.runs.failures import REPEATS_TO_STOP, Failure, FailureHistory
from launch.runs.files import METRICS, SUMMARY, append_lines, read_metrics, to_json, write_atomic
from launch.runs.recorder import MetricsLog
from launch.runs.report import write_report
from tests.small_disk import small_disk


def reject(constant):
    raise ValueError(f"non-standard JSON constant {constant}")


def strict_rows(path: Path) -> list[dict]:
    """Every line parsed by a JSON reader that rejects NaN and Infinity, as strict tools do."""
    return [json.loads(line, parse_constant=reject) for line in path.read_text().splitlines()]


def strict_json(path: Path) -> dict:
    return json.loads(path.read_text(), parse_constant=reject)


def leftovers(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if ".tmp-" in path.name]


@pytest.fixture
def tiny_fs(tmp_path):
    with small_disk(tmp_path, "256k") as disk:
        yield disk


def row(step: int, member: int = 0, loss: float = 2.0, **extra) -> dict:
    return {"step": step, "member": member, "loss": loss, "lr": 1e-3, "tokens": 100 * step, "bytes_sent": 10,
            "dense_bytes": 100, "bytes_sent_total": 10 * step, "dense_bytes_total": 100 * step,
            "tokens_per_s": 1000.0, "time_s": 0.1 * step, "hyperparams": {"lr": 1e-3}, **extra}


# ---------------------------------------------------------------- JSON


def test_non_finite_numbers_are_written_as_null_and_read_back_as_nan(tmp_path):
    text = to_json({"loss": math.nan, "val": [math.inf, -math.inf, 1.5], "nested": {"x": math.nan}})
    assert json.loads(text) == {"loss": None, "val": [None, None, 1.5], "nested": {"x": None}}
    append_lines(tmp_path / METRICS, [to_json(row(5, loss=math.nan, val_loss=math.inf)), to_json(row(10))])
    assert strict_rows(tmp_path / METRICS)[0]["loss"] is None
    rows = read_metrics(tmp_path / METRICS)
    assert math.isnan(rows[0]["loss"]) and math.isnan(rows[0]["val_loss"]) and rows[1]["loss"] == 2.0


def test_an_append_after_a_torn_last_line_starts_a_new_line(tmp_path):
    path = tmp_path / METRICS
    path.write_text(json.dumps(row(5)) + "\n" + '{"step": 10, "mem')  # an older run's crash
    append_lines(path, [to_json(row(15))])
    notes = []
    assert [r["step"] for r in read_metrics(path, notes)] == [5, 15]
    assert notes == [f"1 unreadable line(s) in `{METRICS}` were skipped."]


def test_summary_and_report_of_a_run_whose_member_diverged(tmp_path, capsys):
    rows = [row(10, 0, 2.5, val_loss=2.6), row(10, 1, math.nan, val_loss=math.nan),
            row(20, 0, 2.1, val_loss=2.2), row(20, 1, math.inf, val_loss=math.nan)]
    append_lines(tmp_path / METRICS, [to_json(r) for r in rows])
    finish_run(tmp_path, rows, {}, wall_time_s=1.0, error=None)
    summary = strict_json(tmp_path / SUMMARY)
    assert summary["members"]["1"]["final_val_loss"] is None and summary["members"]["1"]["best_val_loss"] is None
    assert summary["members"]["0"]["best_val_loss"] == 2.2 and summary["status"] == "completed"
    # The report reads the nulls back as NaN: it is written, and says member 1 has no finite loss.
    report = (tmp_path / "report.md").read_text()
    assert (tmp_path / "val_loss.png").stat().st_size > 0 and "| 1 |" in report
    write_report(tmp_path)  # again, from the files alone


# ---------------------------------------------------------------- full disk


def test_a_full_disk_leaves_whole_lines_and_no_temporary_file(tiny_fs):
    path = tiny_fs.path / METRICS
    append_lines(path, [to_json(row(5))])
    write_atomic(tiny_fs.path / SUMMARY, "{}\n")
    tiny_fs.fill()
    with pytest.raises(OSError) as failed:
        append_lines(path, [to_json(row(step, extra="x" * 3000)) for step in range(10, 60, 5)])
    assert failed.value.errno == errno.ENOSPC
    assert [r["step"] for r in strict_rows(path)] == [5]  # the old lines, whole, and nothing else
    with pytest.raises(OSError):
        write_atomic(tiny_fs.path / SUMMARY, json.dumps({"big": "y" * 100_000}))
    assert (tiny_fs.path / SUMMARY).read_text() == "{}\n" and not leftovers(tiny_fs.path)


def test_the_recorder_stops_the_run_when_it_cannot_write(tiny_fs):
    log = MetricsLog(str(tiny_fs.path))
    log.log([row(5)])
    tiny_fs.fill()
    with pytest.raises(OSError):
        log.log([row(step, extra="x" * 3000) for step in range(10, 80, 5)])
    assert "No space left on device" in log.stop_reason() and "the recorder at step 75" in log.stop_reason()
    rows, info = log.snapshot()  # returns (TensorBoard's own files may not fit; recorded, not raised)
    assert [r["step"] for r in rows] == [5] and [r["step"] for r in strict_rows(tiny_fs.path / METRICS)] == [5]
    assert info["failures"]["count"] >= 1 and not leftovers(tiny_fs.path)


def test_finish_run_on_a_full_disk_fails_the_run_without_a_traceback(tiny_fs, capsys):
    tiny_fs.fill()
    with pytest.raises(SystemExit) as exited:
        finish_run(tiny_fs.path, [row(5, val_loss=2.0)], {}, wall_time_s=1.0, error=None)
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert "== failed: 5 steps" in out and "No space left on device" in err and "Traceback" not in out + err
    assert not (tiny_fs.path / SUMMARY).exists() and not leftovers(tiny_fs.path)


# ---------------------------------------------------------------- failures


def test_the_same_failure_stops_restarting_at_its_third_time():
    history = FailureHistory()
    same = Failure(rank=1, step=57, error_type="RuntimeError", message="boom")
    for _ in range(REPEATS_TO_STOP - 1):
        assert history.record(same) is None
        assert history.record(Failure(rank=0, step=57, error_type="RuntimeError", message="peer gone")) is None
    assert history.record(Failure(rank=1, step=58, error_type="RuntimeError", message="boom")) is None
    assert history.record(Failure(rank=1, step=57, error_type="ValueError", message="boom")) is None
    reason = history.record(same)
    assert reason.startswith("rank 1 at step 57: RuntimeError: boom") and f"{REPEATS_TO_STOP} times" in reason
    assert history.error() == reason and history.summary()["count"] == 2 * REPEATS_TO_STOP + 1


def test_an_os_error_counts_by_errno_not_by_file_name():
    history = FailureHistory()
    for attempt in range(REPEATS_TO_STOP):
        err = OSError(errno.EIO, "Input/output error", f"/runs/checkpoint_2026-11-30_21-0{attempt}")
        reason = history.record(Failure.of(err, rank=0, step=100))
    assert reason is not None and "Input/output error" in reason


def test_a_full_disk_stops_at_once_and_the_error_is_the_root_failure():
    history = FailureHistory()
    history.record(Failure(rank=1, step=3, error_type="RuntimeError", message="bad batch"))
    history.record(Failure(rank=0, step=3, error_type="RuntimeError", message="connection closed by peer"))
    assert history.stop_reason is None and history.error() == "rank 1 at step 3: RuntimeError: bad batch"
    full = Failure.of(OSError(errno.ENOSPC, "No space left on device"), rank=0, step=50)
    assert "not retried" in history.record(full)
