"""The quickstart's closing lines: the best member, what it sent against dense, the report."""
import json

import yaml

from launch.quickstart import closing_lines
from launch.runs.summary import summarize


def row(member, step, val_loss, sent, dense, density):
    return {"member": member, "step": step, "loss": val_loss + 0.1, "val_loss": val_loss, "tokens": 1000,
            "time_s": 2.0, "bytes_sent_total": sent, "dense_bytes_total": dense,
            "hyperparams": {"lr": 0.003, "density": density, "dropout": 0.0}}


def write_summary(run_dir, summary):
    """As a job writes it and the quickstart reads it back (member ids become strings)."""
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return json.loads((run_dir / "summary.json").read_text())


def test_closing_lines_name_the_best_member_its_bytes_and_the_report(tmp_path):
    rows = [row(0, 60, 2.9, 10 * 2**20, 100 * 2**20, 0.05), row(1, 60, 2.7, 40 * 2**20, 100 * 2**20, 0.2)]
    summary = write_summary(tmp_path, summarize(rows, {"unigram_baseline": 3.2}, wall_time_s=90.0, status="completed"))
    spec = {"population": {"size": 2, "pbt": {"hyperparam_mutations": {"lr": [0.001, 0.01], "density": [0.05, 0.2]}}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "pbt_events.jsonl").write_text(json.dumps({"step": 30, "target": 0, "source": 1}) + "\n")

    lines = closing_lines(tmp_path, summary)

    assert lines[0].startswith("quickstart completed: 2 member(s), 60 steps") and "1 PBT exploit(s)" in lines[0]
    assert lines[1] == ("best member: 1, validation loss 2.700 nats/token (unigram baseline 3.200); "
                        "PBT left it at density 0.2, lr 0.003")  # dropout was not mutated: not listed
    assert lines[2] == "it sent 40.0 MiB of gradients per worker where dense exchange sends 100.0 MiB (40.0%)"
    assert lines[3].startswith(f"report: {tmp_path / 'report.md'}")


def test_closing_lines_without_a_validation_loss_say_so(tmp_path):
    rows = [{"member": 0, "step": 5, "loss": 4.0, "bytes_sent_total": 0, "dense_bytes_total": 0}]
    summary = write_summary(tmp_path, summarize(rows, {}, wall_time_s=9.0, status="failed"))
    lines = closing_lines(tmp_path, summary)
    assert lines[0].startswith("quickstart failed: 1 member(s), 5 steps")
    assert "no member with a final validation loss" in lines[1] and lines[-1] == f"results: {tmp_path}"
