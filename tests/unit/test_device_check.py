"""benchmarks/device_check.py in its quick CPU form, so that the prepared GPU check never rots:
every part runs (DeepSpeed, torch.distributed with one process; no Ray, no mpiexec) and
reports real numbers, and the resumed training job reproduces the uninterrupted one."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/device_check.py"), "--device", "cpu", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "device_check.json").read_text()), (out / "device_check.md").read_text()


def test_every_part_ran_without_ray(report):
    data, table = report
    assert sorted(data["parts"]) == ["1", "2", "3", "4"]
    for number, part in data["parts"].items():
        assert part["ok"], part.get("error")
        assert positive(part["seconds"])
    assert data["ray_imported"] is False
    for title in ("Population overhead", "Attention kinds", "Step phases", "Training job and resume"):
        assert title in table
    assert "FAILED" not in table


def test_population_ratios(report):
    models = report[0]["parts"]["1"]["models"]
    assert set(models) == {"baseline", "10x"}
    assert models["10x"]["params_per_member"] > 5 * models["baseline"]["params_per_member"]
    for model in models.values():
        assert [row["P"] for row in model["rows"]] == [1, 2]
        assert all(positive(row["batched_s"]) and positive(row["batched_ratio"]) for row in model["rows"])


def test_every_attention_kind_against_its_baseline(report):
    from trainers.attention import ALL_KINDS

    rows = report[0]["parts"]["2"]["rows"]
    assert {row["kind"] for row in rows} == {*ALL_KINDS, "softmax+mlp"}
    for row in rows:
        assert "error" not in row, row
        assert positive(row["ms"]) and positive(row["speedup"])
    mra = {row["T"]: row["options"] for row in rows if row["kind"] == "mra"}
    assert mra == {64: {"blocks_per_row": 2}, 128: {"blocks_per_row": 4}}  # halved until the spec accepts them


def test_phases_and_projection(report):
    part = report[0]["parts"]["3"]
    assert set(part["phases_s"]) == {"dense", "topk", "randomk"}
    for phases in part["phases_s"].values():
        assert all(positive(phases[name]) for name in ("forward+backward", "exchange", "optimizer", "step"))
    assert part["phases_s"]["topk"]["bytes_sent"] < part["phases_s"]["dense"]["bytes_sent"] / 10
    assert {(p["W"], p["gbps"]) for p in part["projection"]} == {(w, g) for w in (2, 4, 8, 16, 32, 64)
                                                                 for g in (1.0, 10.0)}
    assert all(positive(p["topk_speedup"]) and positive(p["randomk_speedup"]) for p in part["projection"])


def test_resume_reproduces_the_metrics(report):
    part = report[0]["parts"]["4"]
    assert part["checkpoint_step"] == part["steps"] // 2
    assert part["rows_compared"] == part["steps"] - part["checkpoint_step"]
    assert part["reproduced"] and part["identical"] and part["max_abs_diff"] == 0.0
    assert positive(part["final_loss"]) and positive(part["final_val_loss"])


def test_a_failing_part_is_recorded_not_raised(tmp_path):
    import device_check

    plan = device_check.make_plan("cpu", quick=True, precision="fp32")
    plan.phases_overrides = ["model.d_model=-1"]
    part = device_check.run_part(3, plan, tmp_path)
    assert part["ok"] is False and "model.d_model" in part["error"]
    table = __import__("device_check_table").markdown(
        {"environment": {"date": "d", "torch": "t", "python": "p"}, "quick": True, "ray_imported": False,
         "parts": {"3": part}})
    assert "FAILED: SpecError" in table


def test_resume_comparison_sees_a_difference():
    from device_check_training import differences

    row = {"step": 6, "member": 0, "loss": 5.0, "time_s": 1.0, "tokens_per_s": 10.0}
    assert differences([row], [{**row, "time_s": 9.0, "tokens_per_s": 1.0}]) == 0.0
    assert differences([row], [{**row, "loss": 5.5}]) == 0.5
    assert differences([row], []) == math.inf
