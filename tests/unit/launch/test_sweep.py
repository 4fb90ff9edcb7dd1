"""Sweep grid expansion (launch/study/sweep.py), results.csv and the study report
(launch/study/report.py) on synthetic trial data: nothing is trained here."""
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from launch.backends.mpi_launcher import loopback_mpiexec
from launch.cli import main
from launch.spec.problems import SpecError
from launch.study.report import (DENSITY, PROJECTION, STEP_TIME, VAL_MB, VAL_STEP, load_study, projection_inputs,
                                 read_results, write_study_report)
from launch.study.sweep import (_window_step_times, describe, expand_grid, load_sweep, result_row, trial_command,
                                write_results_csv)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[3]
BASE = {"name": "study", "task": {"kind": "stdlib_code", "seq_len": 64},
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2}, "train": {"steps": 100, "micro_batch_size": 4}}
GRID = {"compression.method": ["none", "topk", "randomk"], "compression.density": [0.1, 0.01],
        "compression.error_feedback": [True, False], "distributed.num_workers": [1, 2]}


def problems_of(base, sweep) -> list[str]:
    with pytest.raises(SpecError) as err:
        expand_grid(base, sweep)
    return [str(p) for p in err.value.problems]


# ---------------------------------------------------------------- grid expansion


def test_grid_expands_every_combination_and_drops_what_method_none_ignores():
    grid = expand_grid(BASE, GRID)
    # 3 × 2 × 2 × 2 = 24 combinations; dense ignores density and error feedback: 1 per W.
    assert len(grid.trials) + len(grid.dropped) == 24
    assert len(grid.trials) == 2 + 8 + 8
    labels = [t.label for t in grid.trials]
    assert labels[:4] == ["none-w1", "none-w2", "topk-d0.1-ef-w1", "topk-d0.1-ef-w2"]
    assert "randomk-d0.01-noef-w2" in labels and len(set(labels)) == len(labels)
    assert [t.index for t in grid.trials] == list(range(1, 19))
    # Trials at several W of one configuration share its config name (the projection uses it).
    assert {t.config for t in grid.trials if t.label.startswith("topk-d0.01-ef")} == {"topk-d0.01-ef"}
    assert all(t.spec.distributed.launcher == "mpi" for t in grid.trials)
    assert grid.trials[3].spec.compression.density == 0.1 and grid.trials[3].workers == 2
    assert grid.trials[3].resources() == {"CPU": 2.0}
    reasons = [why for _, why in grid.dropped]
    assert all(why.startswith("same job as trial ") for why in reasons)
    assert any("method none ignores compression.density, compression.error_feedback" in w for w in reasons)
    text = describe(grid)
    assert "18 trial(s) from 24 combination(s)" in text and "6 duplicate combination(s) dropped" in text


def test_topk_ignores_randomk_mode_but_randomk_does_not():
    grid = expand_grid(BASE, {"compression.method": ["topk", "randomk"],
                              "compression.randomk_mode": ["shared", "independent"]})
    assert [t.label for t in grid.trials] == ["topk", "randomk-shared", "randomk-independent"]
    assert "ignores compression.randomk_mode" in grid.dropped[0][1]


def test_rank_is_a_grid_axis_of_powersgd_only():
    grid = expand_grid(BASE, {"compression.method": ["topk", "powersgd"], "compression.density": [0.1, 0.01],
                              "compression.rank": [1, 4]})
    # topk: its densities, made without a rank; powersgd: its ranks, whatever the density.
    assert [t.label for t in grid.trials] == ["topk-d0.1", "topk-d0.01", "powersgd-r1", "powersgd-r4"]
    assert [t.spec.compression.rank for t in grid.trials] == [None, None, 1, 4]
    assert [t.config for t in grid.trials][2:] == ["powersgd-r1", "powersgd-r4"]
    reasons = [why for _, why in grid.dropped]
    assert len(reasons) == 4
    assert "same job as trial 1 (topk-d0.1): method topk ignores compression.rank" in reasons
    assert "same job as trial 3 (powersgd-r1): method powersgd ignores compression.density" in reasons
    # powersgd without a rank anywhere: the spec's own problem, named at the key
    assert any("compression.rank" in p and "needs a rank" in p
               for p in problems_of(BASE, {"compression.method": ["powersgd"]}))


def test_a_list_of_grids_runs_their_union_without_duplicates():
    sweep = [{"compression.method": ["none", "topk"], "compression.density": [0.1]},
             {"compression.method": ["topk"], "compression.density": [0.1], "compression.error_feedback": [True, False]}]
    grid = expand_grid(BASE, sweep)
    # topk d0.1 with the default error_feedback (true) is in both grids: run once.
    assert [t.label for t in grid.trials] == ["none", "topk-d0.1-ef", "topk-d0.1-noef"]
    assert grid.keys == ["compression.method", "compression.density", "compression.error_feedback"]
    assert len(grid.dropped) == 1


def test_trials_are_named_after_their_label_and_write_under_the_study(tmp_path):
    base = {**BASE, "compression": {"method": "topk"}}
    grid = expand_grid(base, {"compression.density": [0.1, 0.01]}, study_runs=tmp_path / "runs")
    assert [t.spec.name for t in grid.trials] == ["study-d0.1", "study-d0.01"]
    assert {t.spec.run.storage for t in grid.trials} == {str(tmp_path / "runs")}
    assert grid.base.name == "study"  # the study is named after the spec, its trials after their labels
    # With the default method (none), density changes nothing: one trial.
    assert [t.label for t in expand_grid(BASE, {"compression.density": [0.1, 0.01]}).trials] == ["none"]


def test_a_bad_key_is_named_with_a_hint():
    problems = problems_of(BASE, {"compression.methd": ["topk"], "compression.density": [0.1]})
    assert problems == ["sweep.compression.methd: unknown key; did you mean 'method'? (value 'topk')"]


def test_bad_values_and_shapes_are_all_reported_at_once():
    problems = problems_of(BASE, {"compression.method": ["topk", "fastk"], "compression.density": [2.0],
                                  "model.d_model.width": [3]})
    assert any(p.startswith("sweep.compression.method: ") and "'fastk'" in p for p in problems)
    assert any(p.startswith("sweep.compression.density: ") and "(0, 1]" in p for p in problems)
    assert any(p.startswith("sweep.model.d_model.width: ") and "not a section" in p for p in problems)
    shape = problems_of(BASE, {"compression.density": 0.1, "name": ["a"], "train.lr": [1e-3, 1e-3]})
    assert "sweep.compression.density: must be a non-empty list of values to try, got 0.1; write [0.1]" in shape
    assert any(p.startswith("sweep.name: cannot be swept") for p in shape)
    assert any(p.startswith("sweep.train.lr: lists a value twice") for p in shape)
    assert problems_of(BASE, [{"compression.density": [0.1]}, {"compression.metod": ["none"]}]) == [
        "sweep[1].compression.metod: unknown key; did you mean 'method'? (value 'none')"]
    assert problems_of(BASE, {}) == [
        "sweep: must be a non-empty mapping of dotted spec keys to lists of values, e.g. sweep: "
        "{compression.density: [0.1, 0.01]} (or a list of such mappings)"]


def test_a_problem_of_the_combination_names_it():
    base = {**BASE, "distributed": {"deepspeed": {"train_batch_size": 8}}}
    problems = problems_of(base, {"distributed.num_workers": [2, 3]})
    # micro 4 × accum 1 × 2 workers = 8 is fine; 3 workers break DeepSpeed's rule.
    assert len(problems) == 1 and problems[0].startswith("distributed.deepspeed.train_batch_size: ")
    assert problems[0].endswith("(in the combination distributed.num_workers=3)")


def test_load_sweep_needs_a_sweep_and_the_cli_dry_run(tmp_path, capsys):
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: x\n")
    with pytest.raises(SpecError, match="sweep: required key is missing"):
        load_sweep(plain)
    spec = tmp_path / "sweep.yaml"
    spec.write_text("name: s\nsweep:\n  compression.method: [none, topk]\n  compression.density: [0.1, 0.01]\n")
    base, sweep = load_sweep(spec, ["train.steps=5"])
    assert base == {"name": "s", "train": {"steps": 5}} and list(sweep) == ["compression.method",
                                                                            "compression.density"]
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 trial(s) from 4 combination(s)" in out and "topk-d0.01" in out and "mpiexec -n 2" in out
    assert main(["sweep", str(spec), "--dry-run", "--set", "sweep.compression.density=[3]"]) == 2
    assert "sweep.compression.density" in capsys.readouterr().err


# ---------------------------------------------------------------- results.csv and the report


PARAMS = 10_000  # coordinates per member; dense fp32 = 40,000 bytes per step
PAYLOAD = {"none": 4 * PARAMS, "topk": int(8 * 0.1 * PARAMS), "randomk": int(4 * 0.1 * PARAMS),
           "powersgd": 1200}  # powersgd: per unit of rank


def fake_payload(comp) -> int:
    if comp.method == "none":
        return PAYLOAD["none"]
    if comp.method == "powersgd":
        return PAYLOAD["powersgd"] * comp.rank
    return int(PAYLOAD[comp.method] * comp.density / 0.1)


def fake_run(root: Path, trial, *, steps=100, final=2.5) -> Path:
    """A run directory as a finished job leaves it: metrics.jsonl and summary.json."""
    run_dir = root / f"{trial.spec.name}-20260101-000000"
    run_dir.mkdir(parents=True)
    method, workers = trial.spec.compression.method, trial.workers
    sent = fake_payload(trial.spec.compression)
    step_s = 0.05 + (0.004 if method == "topk" else 0.0) + 0.002 * (workers - 1)
    rows = []
    for step in range(10, steps + 1, 10):
        row = {"step": step, "member": 0, "loss": final + 2.0 * (1 - step / steps) + 0.1,
               "bytes_sent": sent, "dense_bytes": 4 * PARAMS, "bytes_sent_total": sent * step,
               "dense_bytes_total": 4 * PARAMS * step, "tokens": 256 * step, "time_s": step_s * step,
               "tokens_per_s": 256 / step_s}
        if step % 20 == 0:
            row["val_loss"] = final + 2.0 * (1 - step / steps) + (0.0 if trial.spec.compression.error_feedback
                                                                   or method == "none" else 0.3)
        rows.append(row)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"status": "completed", "steps": steps, "wall_time_s": 9.5, "train_time_s": round(step_s * steps, 2),
               "tokens_per_s": 256 / step_s, "final_val_loss": rows[-1]["val_loss"],
               "best_val_loss": rows[-1]["val_loss"], "unigram_baseline": 3.2,
               "bytes_sent_per_worker": sent * steps, "dense_bytes_per_worker": 4 * PARAMS * steps,
               "compression_ratio": round(4 * PARAMS / sent, 2)}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


@pytest.fixture
def study_dir(tmp_path) -> Path:
    study = tmp_path / "study-sweep-20260101-000000"
    grid = expand_grid(BASE, GRID, study_runs=study / "runs")
    rows = []
    for trial in grid.trials:
        if trial.label == "randomk-d0.01-noef-w2":  # one failed trial: no run directory
            rows.append(result_row(trial, {"status": "failed"}, log=study / "trials" / f"{trial.stem}.log"))
            continue
        run_dir = fake_run(study / "runs", trial)
        rows.append(result_row(trial, {"status": "completed", "run_dir": str(run_dir), "process_wall_s": 12.0},
                               log=study / "trials" / f"{trial.stem}.log"))
    write_results_csv(rows, study / "results.csv")
    (study / "study.json").write_text(json.dumps(
        {"name": "study", "dropped": [{"overrides": o, "reason": r} for o, r in grid.dropped]}, default=str))
    return study


def test_results_csv_has_one_typed_row_per_trial(study_dir):
    rows = {r["trial"]: r for r in read_results(study_dir / "results.csv")}
    assert len(rows) == 18
    dense, topk = rows["none-w2"], rows["topk-d0.01-noef-w2"]
    assert dense["density"] == 1.0 and dense["error_feedback"] is None and dense["value_dtype"] == "fp32"
    assert dense["payload_bytes_per_step"] == 40_000 and dense["bytes_sent_per_worker"] == 4_000_000
    assert dense["mb_sent_per_worker"] == 4.0 and dense["compression_ratio"] == 1.0
    assert topk["error_feedback"] is False and topk["payload_bytes_per_step"] == 800 and topk["workers"] == 2
    assert topk["step_time_s"] == pytest.approx(0.056) and topk["train_time_s"] == pytest.approx(5.6)
    assert topk["run_dir"].endswith("study-topk-d0.01-noef-w2-20260101-000000") and topk["status"] == "completed"
    assert topk["step_time_min_s"] == pytest.approx(0.056) and topk["step_time_median_s"] == pytest.approx(0.056)
    assert rows["randomk-d0.01-noef-w2"]["status"] == "failed" and rows["randomk-d0.01-noef-w2"]["run_dir"] is None


def test_step_time_per_log_interval():
    # Steps 10, 20, 25, 30 (an evaluation step logged in between), two members per step.
    rows = [{"step": s, "member": m, "time_s": t} for s, t in [(10, 1.0), (20, 1.6), (25, 2.6), (30, 2.85)]
            for m in (0, 1)]
    # Intervals: 0.6 s / 10 steps, 1.0 s / 5, 0.25 s / 5 -> 0.06, 0.2, 0.05 s per step.
    assert _window_step_times(rows) == {"step_time_median_s": 0.06, "step_time_min_s": 0.05}
    assert _window_step_times(rows[:2]) == {"step_time_median_s": None, "step_time_min_s": None}


def test_projection_takes_compute_from_the_fastest_trial_of_a_configuration(study_dir):
    inputs = {i.row.name: i for i in projection_inputs(load_study(study_dir))}
    assert set(inputs) >= {"none", "topk-d0.1-ef", "randomk-d0.01-ef"}
    topk = inputs["topk-d0.1-ef"]
    # W=1: 54 ms per step, W=2: 56 ms (its local exchange): the smaller bound on compute.
    assert topk.source == "fastest interval of the W=1 run (no network)"
    assert topk.row.compute_s == pytest.approx(0.054)
    assert topk.row.payload_bytes == 8000 and topk.collective == "all-gather" and topk.at_workers == 2
    assert inputs["randomk-d0.1-ef"].collective == "all-reduce"
    # The failed W=2 trial leaves its configuration with the 1-worker trial only.
    assert inputs["randomk-d0.01-noef"].at_workers == 1


def test_study_report_writes_every_plot_and_the_projection_tables(study_dir):
    report = write_study_report(study_dir)
    for name in (VAL_STEP, VAL_MB, DENSITY, STEP_TIME, PROJECTION):
        path = study_dir / name
        assert path.read_bytes()[:8] == PNG_MAGIC, name
        width, height = Image.open(path).size
        assert width > 600 and height > 250, (name, width, height)
    text = report.read_text()
    for name in (VAL_STEP, VAL_MB, DENSITY, STEP_TIME, PROJECTION):
        assert f"]({name})" in text
    assert "**1 Gbit/s**" in text and "**100 Gbit/s**" in text and "W=128" in text
    assert "2(W-1)/W · S/β + 2(W-1)·α" in text and "fastest interval of the W=1 run (no network)" in text
    assert "latency α = 10 µs per message" in text  # the projection caption's value, formatted
    # Measured compute: shared random-k 1% (50 ms, the least) wins. Equal compute: top-k 1%'s
    # all-gather of 800 B (W=2, 1 Gbit/s: 6.4 µs + one 10 µs latency) beats random-k's
    # all-reduce of 400 B (3.2 µs + two latencies). Every run with error feedback ends at
    # dense's loss, so the quality-constrained winner (in brackets) is shown too.
    assert "| 2 | randomk-d0.01-ef / topk-d0.01-ef [randomk-d0.01-ef] |" in text
    assert "Who wins where" in text and "randomk-d0.01-noef-w2: failed" in text
    assert "method none ignores compression.density" in text
    # A moved study still finds its run directories under runs/.
    moved = study_dir.with_name("moved")
    study_dir.rename(moved)
    assert all(t.steps for t in load_study(moved).trials if t.ok)


def test_study_report_shows_powersgd_by_rank(tmp_path):
    grid = expand_grid(BASE, {"compression.method": ["none", "topk", "powersgd"], "compression.density": [0.1],
                              "compression.rank": [1, 2], "distributed.num_workers": [1, 2]},
                       study_runs=tmp_path / "runs")
    rows = [result_row(t, {"status": "completed", "run_dir": str(fake_run(tmp_path / "runs", t))},
                       log=tmp_path / f"{t.stem}.log") for t in grid.trials]
    write_results_csv(rows, tmp_path / "results.csv")
    by_label = {r["trial"]: r for r in read_results(tmp_path / "results.csv")}
    assert set(by_label) == {"none-w1", "none-w2", "topk-d0.1-w1", "topk-d0.1-w2", "powersgd-r1-w1",
                             "powersgd-r1-w2", "powersgd-r2-w1", "powersgd-r2-w2"}
    r2 = by_label["powersgd-r2-w2"]
    assert r2["rank"] == 2 and r2["density"] is None and r2["payload_bytes_per_step"] == 2400
    assert by_label["topk-d0.1-w2"]["rank"] is None
    inputs = {i.row.name: i for i in projection_inputs(load_study(tmp_path))}
    assert inputs["powersgd-r2"].collective == "2 all-reduces" and inputs["powersgd-r2"].row.payload_bytes == 2400
    text = write_study_report(tmp_path).read_text()
    assert "| powersgd-r2-w2 | completed | powersgd | (rank 2) |" in text
    assert "2(W-1)/W · S/β + 4(W-1)·α" in text and "| powersgd-r1 | 2 all-reduces | 1,200 |" in text
    for name in (VAL_STEP, VAL_MB, DENSITY, STEP_TIME, PROJECTION):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC, name


def test_study_report_on_a_study_where_everything_failed(tmp_path):
    grid = expand_grid(BASE, {"compression.method": ["none", "topk"]})
    rows = [result_row(t, {"status": "failed"}, log=tmp_path / "x.log") for t in grid.trials]
    write_results_csv(rows, tmp_path / "results.csv")
    text = write_study_report(tmp_path).read_text()
    assert "nothing to project" in text and "## Failed trials" in text


def test_the_shipped_compression_sweep_expands():
    grid = expand_grid(*load_sweep(REPO / "configs" / "compression_sweep.yaml"))
    labels = [t.label for t in grid.trials]
    assert len(labels) == 18 and len(grid.dropped) == 2
    assert {"none-w2", "topk-d0.01-noef-w2", "randomk-d0.1-ef-w2", "none-w1", "randomk-d0.01-ef-w1"} <= set(labels)
    assert {f"powersgd-r{r}-ef-w{w}" for r in (1, 2, 4) for w in (1, 2)} <= set(labels)
    assert {t.workers for t in grid.trials} == {1, 2}
    assert all(t.spec.compression.randomk_mode == "shared" for t in grid.trials)


def test_a_trial_starts_its_ranks_as_a_loopback_only_mpiexec_run(tmp_path):
    # The one recipe (launch/backends/mpi_launcher.py) that test_loopback.py checks with a real job.
    trial = {"workers": 2, "cpus_per_worker": 1.0, "spec_file": str(tmp_path / "t.yaml")}
    cmd, env = trial_command(trial, {"PATH": "/usr/bin"})
    expected, expected_env = loopback_mpiexec(2, [sys.executable, "-m", "launch", "run", str(tmp_path / "t.yaml")],
                                              env)
    assert cmd == expected and env == expected_env
    assert Path(cmd[0]).name == "mpiexec.gforker" and Path(cmd[0]).exists() and cmd[1:3] == ["-n", "2"]
    assert env["UCX_NET_DEVICES"] == "lo" and env["OMP_NUM_THREADS"] == "1"
    # A setting of the caller's own is kept.
    assert trial_command(trial, {"UCX_NET_DEVICES": "eth1"})[1]["UCX_NET_DEVICES"] == "eth1"
