"""The run report (launch/runs/report.py) on synthetic run directories: a 4-member PBT run with
two exploits, a plain one-member run, a failed run, and runs without metrics."""
import json
from pathlib import Path

import pytest
from PIL import Image

from launch.runs.report import lineage, load_run, member_histories, varying_hyperparams, write_report
from pbt.events import Event

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INITIAL = {"lr": [1e-3, 2e-3, 3e-3, 4e-3], "dropout": [0.0, 0.0, 0.1, 0.1],
           "weight_decay": [0.01] * 4, "warmup": [0.1] * 4, "density": [0.05] * 4}
# Member 3 copies member 1 at step 20; member 2 copies member 3 (by then a copy of 1) at step 40.
EVENTS = [
    Event(step=20, target=3, source=1, reason="truncation", target_score=3.1, source_score=2.9,
          old={k: v[3] for k, v in INITIAL.items()},
          new={**{k: v[1] for k, v in INITIAL.items()}, "lr": 2.4e-3},
          operations={"lr": "* 1.2", "dropout": "shift left (noop)"}),
    Event(step=40, target=2, source=3, reason="truncation", target_score=3.0, source_score=2.7,
          old={k: v[2] for k, v in INITIAL.items()},
          new={**{k: v[1] for k, v in INITIAL.items()}, "lr": 1.92e-3, "dropout": 0.05},
          operations={"lr": "* 0.8", "dropout": "resample"}),
]


def hyperparams_at(member: int, step: int, events=EVENTS) -> dict:
    """The values that trained `step`: an event at step e is in force from step e + 1."""
    values = {k: v[member] for k, v in INITIAL.items()}
    for event in events:
        if event.target == member and event.step < step:
            values = dict(event.new)
    return values


def metric_rows(members: int, steps: int, *, events=(), eval_every=10, log_every=5) -> list[dict]:
    rows, offset = [], {m: 0.1 * m for m in range(members)}
    for step in range(log_every, steps + 1, log_every):
        for event in events:
            if event.step == step - log_every:  # the target now carries the source's weights
                offset[event.target] = offset[event.source]
        for m in range(members):
            row = {"step": step, "member": m, "loss": 3.5 - 0.01 * step + offset[m], "lr": 1e-3,
                   "tokens": 1024 * step, "bytes_sent": 100, "dense_bytes": 2000, "bytes_sent_total": 100 * step,
                   "dense_bytes_total": 2000 * step, "tokens_per_s": 5000.0, "time_s": 0.2 * step,
                   "hyperparams": hyperparams_at(m, step, events) if events else {k: v[m] for k, v in INITIAL.items()}}
            if step % eval_every == 0:
                row["val_loss"] = 3.6 - 0.01 * step + offset[m]
            rows.append(row)
    return rows


def write_run(run_dir: Path, rows: list[dict], *, events=(), members=4, status="completed", name="demo",
              summary=True, method="topk") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.yaml").write_text(f"name: {name}\nseed: 0\ntrain: {{steps: 60, lr: 1.0e-3}}\n"
                                       f"compression: {{method: {method}, density: 0.05}}\n")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if events:
        (run_dir / "pbt_events.jsonl").write_text("".join(e.to_json() + "\n" for e in events))
    if summary:
        last = {m: [r for r in rows if r["member"] == m] for m in range(members)}
        per_member = {str(m): {"final_val_loss": next((r["val_loss"] for r in reversed(mine) if "val_loss" in r), None),
                               "best_val_loss": min((r["val_loss"] for r in mine if "val_loss" in r), default=None),
                               "final_loss": mine[-1]["loss"] if mine else None,
                               "hyperparams": mine[-1]["hyperparams"] if mine else None}
                      for m, mine in last.items()}
        finals = [p["final_val_loss"] for p in per_member.values() if p["final_val_loss"] is not None]
        (run_dir / "summary.json").write_text(json.dumps({
            "status": status, "steps": rows[-1]["step"] if rows else 0, "wall_time_s": 93.4, "train_time_s": 12.0,
            "tokens_per_s": 20480.0, "final_val_loss": min(finals, default=None),
            "best_val_loss": min(finals, default=None), "unigram_baseline": 4.2, "members": per_member,
            "initial_hyperparams": {k: v[:members] for k, v in INITIAL.items()},
            "bytes_sent_per_worker": 3 * 2**20, "dense_bytes_per_worker": 60 * 2**20, "compression_ratio": 20.0,
            "params_per_member": 123456, "world_size": 2}))
    return run_dir


def assert_png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] > 600 and image.size[1] > 300


@pytest.fixture(scope="module")
def pbt_report(tmp_path_factory) -> tuple[Path, str]:
    run_dir = write_run(tmp_path_factory.mktemp("pbt") / "demo-run", metric_rows(4, 60, events=EVENTS), events=EVENTS)
    path = write_report(run_dir)
    return run_dir, path.read_text()


def test_pbt_report_writes_markdown_and_valid_pngs(pbt_report):
    run_dir, text = pbt_report
    assert (run_dir / "report.md").read_text() == text
    assert_png(run_dir / "val_loss.png")
    assert_png(run_dir / "hyperparams.png")
    assert "![validation loss](val_loss.png)" in text and "![hyperparameters](hyperparams.png)" in text
    assert not [p.name for p in run_dir.iterdir() if ".tmp-" in p.name]  # atomic writes left nothing behind


def test_pbt_report_header(pbt_report):
    _, text = pbt_report
    assert text.startswith("# Run report: demo\n")
    assert "**Status:** completed; 60 steps; 4 members of 123,456 parameters; 2 workers" in text
    assert "1m 33.4s" in text and "20,480 tokens/s" in text
    assert "unigram baseline 4.200" in text and "below" in text
    assert "3.0 MiB sent per worker vs 60.0 MiB dense (compression ratio 20\u00d7)" in text
    assert "did not complete" not in text


def population_rows(text: str) -> dict[str, list[str]]:
    """The final population table: member -> its cells
    (member | final | best | times exploited | final hyperparameters | lineage)."""
    table = text.split("## Final population")[1].split("\n\n")[1]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()[2:]]
    return {cells[0]: cells for cells in rows}


def test_pbt_report_population_table_and_lineage(pbt_report):
    _, text = pbt_report
    rows = population_rows(text)
    assert sorted(rows) == ["0", "1", "2", "3"]
    cells = rows["2"]
    assert cells[3] == "1" and cells[5] == "2 <- 3 @40 <- 1 @20"
    assert cells[4] == "lr 1.92e-03, dropout 0.05"
    assert rows["3"][3:] == ["1", "lr 2.40e-03, dropout 0", "3 <- 1 @20"]
    assert rows["0"][3:6:2] == ["0", "0"]
    assert float(cells[1]) == pytest.approx(3.6 - 0.6 + 0.1)  # member 2 inherited member 1's offset
    assert "Same for every member throughout: weight_decay 0.01, warmup 0.1, density 0.05." in text
    assert "Lineage reads back in time" in text


def test_pbt_report_captions_and_exploit_list(pbt_report):
    _, text = pbt_report
    assert "Each \u00d7 marks a member just before it was exploited" in text
    assert "its line jumps to the new value" in text and "logarithmic" in text
    assert "## Exploits (2)" in text
    assert ("| 20 | member 3 \u2190 member 1 | truncation | 3.100 / 2.900 | lr 4.00e-03 \u2192 2.40e-03 "
            "(source's 2.00e-03 * 1.2), dropout 0.1 \u2192 0 (shift left (noop) from source's 0) |") in text
    assert "dropout 0.1 \u2192 0.05 (resampled) |" in text


def test_histories_lineage_and_varying_names(tmp_path):
    run_dir = write_run(tmp_path / "r", metric_rows(4, 60, events=EVENTS), events=EVENTS)
    run = load_run(run_dir)
    histories = member_histories(run)
    assert varying_hyperparams(histories) == ["lr", "dropout"]
    assert [lineage(histories, m) for m in range(4)] == ["0", "1", "2 <- 3 @40 <- 1 @20", "3 <- 1 @20"]
    assert histories[2].at(40)["lr"] == pytest.approx(1.92e-3) and histories[2].at(39)["lr"] == 3e-3
    assert not run.notes


def test_plain_run_has_loss_plot_and_table_but_no_hyperparams(tmp_path):
    run_dir = write_run(tmp_path / "plain", metric_rows(1, 60), members=1, name="plain")
    (run_dir / "hyperparams.png").write_bytes(PNG_MAGIC)  # stale, from an earlier report
    text = write_report(run_dir).read_text()
    assert_png(run_dir / "val_loss.png")
    assert not (run_dir / "hyperparams.png").exists() and "hyperparams.png" not in text
    assert "## Exploits" not in text and "No member was exploited" in text
    assert "Same for every member" not in text  # the table already shows every value
    final_hyperparams = "lr 1.00e-03, weight_decay 0.01, warmup 0.1, dropout 0, density 0.05"
    assert population_rows(text)["0"][3:] == ["0", final_hyperparams, "0"]


def test_a_dense_run_lists_no_density(tmp_path):
    """Only hyperparameters that took effect: without compression the density acted on nothing."""
    run_dir = write_run(tmp_path / "dense", metric_rows(1, 60), members=1, name="dense", method="none")
    text = write_report(run_dir).read_text()
    assert population_rows(text)["0"][4] == "lr 1.00e-03, weight_decay 0.01, warmup 0.1, dropout 0"
    pbt_dir = write_run(tmp_path / "dense-pbt", metric_rows(4, 60, events=EVENTS), events=EVENTS, method="none")
    assert "Same for every member throughout: weight_decay 0.01, warmup 0.1." in write_report(pbt_dir).read_text()


def test_failed_run_with_few_rows_and_no_validation(tmp_path):
    rows = metric_rows(4, 10, eval_every=1000)[:6]  # 2 logged steps for members 0-3, then a crash
    run_dir = write_run(tmp_path / "failed", rows, status="failed")
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 15, "memb')  # a line cut short
    text = write_report(run_dir).read_text()
    assert "This run did not complete (status: failed)" in text
    assert "Training loss per member" in text and "1 unreadable line(s)" in text
    assert_png(run_dir / "val_loss.png")
    assert "| 3 | n/a | n/a | 0 |" in text


def test_events_that_do_not_replay_are_noted_not_fatal(tmp_path):
    bad = [Event(step=20, target=1, source=0, reason="truncation", target_score=None, source_score=1.0,
                 old={"lr": 9.0}, new={**{k: v[0] for k, v in INITIAL.items()}}, operations={})]
    run_dir = write_run(tmp_path / "bad", metric_rows(2, 30), events=bad, members=2)
    text = write_report(run_dir).read_text()
    assert "do not replay" in text and "1 <- 0 @20" in text
    assert "| 20 | member 1 \u2190 member 0 | truncation | n/a" in text


@pytest.mark.parametrize("metrics", [None, ""])
def test_missing_or_empty_metrics(tmp_path, metrics):
    run_dir = tmp_path / "early"
    run_dir.mkdir()
    (run_dir / "spec.yaml").write_text("name: early\n")
    (run_dir / "summary.json").write_text(json.dumps({"status": "failed", "steps": 0}))
    (run_dir / "val_loss.png").write_bytes(PNG_MAGIC)  # stale
    if metrics is not None:
        (run_dir / "metrics.jsonl").write_text(metrics)
    text = write_report(run_dir).read_text()
    assert text.startswith("# Run report: early\n")
    assert ("is missing" if metrics is None else "has no metric rows") in text and "nothing to plot" in text
    assert not (run_dir / "val_loss.png").exists() and not (run_dir / "hyperparams.png").exists()


def test_run_dir_without_spec_or_summary(tmp_path):
    run_dir = tmp_path / "bare-123"
    run_dir.mkdir()
    text = write_report(run_dir).read_text()
    assert text.startswith("# Run report: bare-123\n") and "No `summary.json`" in text


def test_exploit_at_the_last_step_is_explained(tmp_path):
    late = [Event(step=30, target=1, source=0, reason="truncation", target_score=3.4, source_score=3.3,
                  old={k: v[1] for k, v in INITIAL.items()}, new={k: v[0] for k, v in INITIAL.items()},
                  operations={"lr": "* 1.0"})]
    run_dir = write_run(tmp_path / "late", metric_rows(2, 30, events=late), events=late, members=2)
    text = write_report(run_dir).read_text()
    assert "The exploits at step 30 (member 1 \u2190 member 0) came after the last training step" in text
    assert population_rows(text)["1"][5] == "1 <- 0 @30"
    assert_png(run_dir / "val_loss.png")
