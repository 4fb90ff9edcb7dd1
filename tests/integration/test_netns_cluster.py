"""A real two-node Ray cluster in network namespaces (launch/netns/): a tiny top-k job
runs across it with one DeepSpeed worker per node, and everything is torn down after.

Needs root and iproute2; skipped otherwise. The namespaces share this filesystem, so the
run directory is under tmp_path.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launch.netns import PREFIX, ns_names
from tests.integration.conftest import REPO, read_rows, run_dir_of


def namespaces_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    probe = f"{PREFIX}probe-{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"`ip netns add` fails here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


REASON = namespaces_unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no namespace cluster: {REASON}")


def test_tiny_topk_job_spans_two_namespace_nodes(tmp_path):
    placement_file = tmp_path / "placement.json"
    done = subprocess.run(
        [sys.executable, "-m", "launch.netns", "run", "--hosts", "2", "--rate", "1gbit",
         "--placement-json", str(placement_file), "--spec", "configs/tiny.yaml",
         "--set", f"run.storage={tmp_path / 'runs'}", "--set", "compression.method=topk",
         "--set", "distributed.resources_per_worker={CPU: 1, node_slot: 1}",
         "--set", "train.steps=10", "--set", "train.eval_interval=10", "--set", "run.checkpoint_interval=10"],
        cwd=REPO, capture_output=True, text=True, timeout=400)
    output = done.stdout + done.stderr
    tag = re.search(rf"{PREFIX}(\d+)-sw", output)
    assert tag, output[-4000:]

    # Torn down, whatever happened: no namespace, no per-namespace /etc files, no Ray temp dir.
    ours = f"{PREFIX}{tag.group(1)}-"
    assert not [name for name in ns_names() if name.startswith(ours)]
    assert not list(Path("/etc/netns").glob(f"{ours}*"))
    assert not (Path("/tmp") / f"{PREFIX}{tag.group(1)}").exists()
    assert done.returncode == 0, output[-4000:]

    run_dir = run_dir_of(output)
    assert run_dir.parent == tmp_path / "runs"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 10
    rows = read_rows(run_dir)
    assert rows and all(0 < row["bytes_sent"] < row["dense_bytes"] for row in rows)  # top-k did the exchange

    # Both nodes hosted a worker: Ray's state API (actor -> node -> node IP) ...
    report = json.loads(placement_file.read_text())
    assert report["placement"].get("per_node") == {"10.213.0.1": 1, "10.213.0.2": 1}, report
    # ... and Ray Train's own account of its worker group.
    ranks = dict(re.findall(r"\(ip=(10\.213\.0\.\d), pid=\d+\) world_rank=(\d)", output))
    assert sorted(ranks) == ["10.213.0.1", "10.213.0.2"], output[-4000:]
    # Both hosts sent traffic over their shaped link (gradients, Ray's own messages).
    assert all(moved["tx_bytes"] > 0 and moved["rx_bytes"] > 0 for moved in report["traffic"].values())
