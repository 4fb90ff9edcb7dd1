"""benchmarks/peers.py: the configurations bench_cluster.py measures, the peers' wire bytes
and DDP's bucket count (checked against numbers torch's DDP and powerSGD_hook produced), the
table's order; and the peer worker's hook, which makes torch's powerSGD_hook compress the
population model's [1, n, m] weights. (Its process group per bucket matters only with two
ranks or more, too slow for a unit test; checked by hand at W = 2, docs/cluster.md.)"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launch.study import netmodel

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from peers import PEERS, configurations, ddp_buckets, row_order, wire_bytes


def test_configurations_dense_once_sparse_per_density_powersgd_per_rank_then_peers():
    confs = list(configurations(["dense", "topk-fp16", "powersgd"], [0.1, 0.01], [1, 4],
                                ["deepspeed", "ddp", "ddp-powersgd"]))
    assert confs == [("dense", None, None), ("topk-fp16", 0.1, None), ("topk-fp16", 0.01, None),
                     ("powersgd", None, 1), ("powersgd", None, 4), ("deepspeed", None, None), ("ddp", None, None),
                     ("ddp-powersgd", None, 1), ("ddp-powersgd", None, 4)]
    assert list(configurations(["dense"], [0.01], [1, 2, 4])) == [("dense", None, None)]


def test_dense_peers_send_the_whole_gradient():
    shapes = [(512, 512), (512,), (256, 512)]
    dense = 4 * (512 * 512 + 512 + 256 * 512)
    assert wire_bytes(shapes, peer="ddp", rank=None) == dense
    assert wire_bytes(shapes, peer="deepspeed", rank=None) == dense


def test_powersgd_hook_bytes_by_hand():
    # [512, 512] at r=2: (512 + 512)·2 values; the vector travels whole; [3, 4] would send
    # (3 + 4)·2·2 = 28 > 12 values under torch's min_compression_rate 2, so it goes dense.
    shapes = [(512, 512), (512,), (3, 4)]
    assert wire_bytes(shapes, peer="ddp-powersgd", rank=2) == 4 * ((512 + 512) * 2 + 512 + 12)
    # torch views [n, a, b] as [n, a·b]: [64, 2048] at r=16 sends (64 + 2048)·16 values; at
    # r=64 that would be 2·2112·64 > 64·2048 values, so it goes dense.
    assert wire_bytes([(64, 4, 512)], peer="ddp-powersgd", rank=16) == 4 * (64 + 2048) * 16
    assert wire_bytes([(64, 4, 512)], peer="ddp-powersgd", rank=64) == 4 * 64 * 2048


def test_powersgd_hook_bytes_of_the_benchmark_model():
    # configs/netns_bench.yaml's model: what torch's hook (through the worker's adapter)
    # compressed on it, counted by hand from its 100 parameter shapes on 2026-11-23.
    model = ([(128, 512), (256, 512)] + [(512,), (512,), (512, 1536), (1536,), (512, 512), (512,), (512,), (512,),
                                         (512, 2048), (2048,), (2048, 512), (512,)] * 8 + [(512,), (512,)])
    assert wire_bytes(model, peer="ddp", rank=None) == 101_666_816
    assert [wire_bytes(model, peer="ddp-powersgd", rank=r) for r in (1, 2, 4)] == [484_864, 752_640, 1_288_192]


def test_ddp_buckets_as_torch_rebuilt_them():
    # 12 Linear(1024, 1024) layers (weight 4,194,304 B, bias 4,096 B each), reversed: torch's
    # DDP rebuilt buckets of 4,198,400 / 29,388,800 / 16,793,600 bytes: 3 buckets.
    sizes = [4_194_304, 4_096] * 12
    assert ddp_buckets(sizes) == 3
    assert ddp_buckets([]) == 0
    assert ddp_buckets([100]) == 1
    assert ddp_buckets([30 * 1024 * 1024]) == 1  # one tensor over the cap: a bucket of its own


def test_rows_of_one_family_sit_side_by_side():
    def row(method, density=None, rank=None, rate=1e9, workers=2):
        return {"workers": workers, "rate_bps": rate, "method": method, "density": density, "rank": rank}

    rows = [row("powersgd", rank=2), row("topk-fp16", 0.01), row("ddp-powersgd", rank=2), row("dense"),
            row("ddp"), row("topk-fp16", 0.1), row("deepspeed"), row("powersgd", rank=1), row("ddp-powersgd", rank=1),
            row("dense", rate=1e8)]
    ordered = [(r["method"], r["density"] or r["rank"]) for r in sorted(rows, key=row_order)]
    assert ordered == [("dense", None), ("deepspeed", None), ("ddp", None), ("dense", None), ("topk-fp16", 0.1),
                       ("topk-fp16", 0.01), ("ddp-powersgd", 1), ("powersgd", 1), ("ddp-powersgd", 2),
                       ("powersgd", 2)]
    # Records written before ranks existed have no "rank" key.
    assert row_order({"workers": 2, "rate_bps": 1e9, "method": "dense", "density": None})


def test_peers_overlap_as_they_run():
    assert not PEERS["deepspeed"].overlaps  # ZeRO 0 reduces after the backward pass
    assert PEERS["ddp"].overlaps and PEERS["ddp-powersgd"].overlaps
    assert [name for name, peer in PEERS.items() if peer.takes_rank] == ["ddp-powersgd"]


# Run in a child process that leaves with os._exit once it has printed the share: tearing
# down a gloo process group that DDP's reducer still holds joins gloo's worker threads,
# which deadlocked once inside the full suite (~ProcessGroupGloo in Reducer's destructor,
# after other tests had run in the same process); the child has nothing to tear down.
_COMPRESSED_SHARE = r"""
import os, sys
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
from torch.nn.parallel import DistributedDataParallel
from peer_worker import powersgd_over_gloo


class Member(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(1, 64, 32))

    def forward(self, x):
        return x @ self.weight[0]


dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # in memory, no sockets
ddp = DistributedDataParallel(Member())
state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=1, start_powerSGD_iter=2)
ddp.register_comm_hook(state, powersgd_over_gloo(buckets=2) if sys.argv[1] == "adapter" else powerSGD_hook.powerSGD_hook)
for _ in range(3):
    ddp(torch.randn(4, 64)).sum().backward()
print(state.total_numel_after_compression / state.total_numel_before_compression, flush=True)
os._exit(0)
"""


def compressed_share(hook: str) -> float:
    """Elements torch's PowerSGD state counted after compression / before, over three DDP
    steps (the first two all-reduce only) of a weight with a member axis, [1, 64, 32], with
    torch's hook ("plain") or it through peer_worker's adapter ("adapter")."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])}
    done = subprocess.run([sys.executable, "-c", _COMPRESSED_SHARE, hook], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.split()[-1])


def test_the_hook_compresses_population_weights_through_the_adapter():
    # Seen as [1, 2048], the weight is sent whole; through the adapter as [64, 32] at r=1.
    assert compressed_share("plain") == 1.0
    assert compressed_share("adapter") == pytest.approx((64 + 32) / (64 * 32))


def record(method, *, workers=2, rate="1gbit", density=None, rank=None, step_s, bytes_sent=101_666_816, **extra):
    rate_bps = {"1gbit": 1e9, "10gbit": 1e10, "none": 0.0}[rate]
    return {"workers": workers, "rate": rate, "rate_bps": rate_bps, "method": method, "density": density,
            "rank": rank, "steps": 4, "step_s": step_s, "tokens_per_s": 256 / step_s, "bytes_sent": bytes_sent,
            "dense_bytes": 101_666_816, "link_bytes": {"10.213.0.1": 4e8, "10.213.0.2": 4e8}, "loss": 4.3,
            "val_loss": 4.6, "foreign_cores": 0.0, **extra}


def test_the_table_shows_peers_beside_sparsepop(capsys):
    import bench_cluster

    rows = [record("dense", step_s=1.6), record("ddp", step_s=1.2, buckets=4), record("topk-fp16", density=0.01,
                                                                                         step_s=0.8, bytes_sent=1.5e6),
            record("dense", workers=1, rate="none", step_s=0.7),
            record("ddp", workers=1, rate="none", step_s=0.7, backward_s=0.4, buckets=4)]
    bench_cluster.print_table({bench_cluster.key(r): r for r in rows}, seconds_per_entry=0.0, sparsepop_buckets=4)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines[1:4]] == ["ddp", "dense", "topk-fp16"]  # W, link (2 words), method
    ddp, dense = lines[1].split(), lines[2].split()
    assert dense[8] == "0.75x"  # vs DDP: 1.2 s against 1.6 s
    assert ddp[10] == "100.0"  # link MB per step: 4e8 B over 4 steps
    # DDP's model overlaps its 4 buckets with the 0.4 s backward pass: the 1 Gbit/s all-reduce
    # of 101.7 MB (0.813 s) is longer, so 0.3 + 0.813 + 0.1 = 1.213 s; measured 1.2 s: -1%.
    assert ddp[15] == "-1%"  # err(W=1)
    # Sparsepop's exchange overlaps too, by default: DDP's backward pass, its own 4 buckets.
    assert dense[15] == f"{1.6 / 1.213354528 - 1:+.0%}"
    # Compressing costs top-k 0.2 s more than dense on one worker, inside the backward pass.
    assert bench_cluster.overlap_terms(rows[2] | {"workers": 1}, {bench_cluster.key(r): r for r in rows} | {
        (1, "none", "topk-fp16", 0.01, None): record("topk-fp16", workers=1, rate="none", density=0.01, step_s=0.9)},
        4) == (pytest.approx(0.6), 4)
    # With compression.overlap false: compute + comm, no overlap.
    rows[0] = record("dense", step_s=1.6, overrides={"compression.overlap": "false"})
    bench_cluster.print_table({bench_cluster.key(r): r for r in rows}, seconds_per_entry=0.0, sparsepop_buckets=4)
    dense = capsys.readouterr().out.splitlines()[2].split()
    assert dense[15] == f"{1.6 / (0.7 + 0.813354528) - 1:+.0%}"
    # A record written before ranks existed is keyed with rank None and still prints.
    old = {k: v for k, v in record("dense", step_s=1.5).items() if k not in ("rank", "loss", "val_loss")}
    bench_cluster.print_table({bench_cluster.key(old): old}, seconds_per_entry=0.0, sparsepop_buckets=4)
    assert " nan " in capsys.readouterr().out.splitlines()[1]


def test_the_model_is_calibrated_at_10gbit_and_predicts_the_other_rates():
    import bench_cluster

    after = {"overrides": {"compression.overlap": "false"}}  # compute + comm, no overlap term
    light = {"density": 0.001, "bytes_sent": 101_667}
    rows = [record("dense", workers=1, rate="none", step_s=0.4), record("randomk-shared", workers=1, rate="none",
                                                                          step_s=0.4, **light),
            record("dense", rate="10gbit", step_s=0.7, **after),
            record("randomk-shared", rate="10gbit", step_s=0.5, **light, **after),
            record("dense", rate="1gbit", step_s=1.5, **after)]
    results = {bench_cluster.key(r): r for r in rows}
    calibration = bench_cluster.calibrate(results, 2, "10gbit", 0.0, 4)
    link = netmodel.ring_all_reduce_s
    # sync: the lightest row's step beyond W=1 and its (tiny) all-reduce; then per byte: dense's rest.
    sync = 0.5 - 0.4 - link(101_667, workers=2, bandwidth_gbps=10)
    assert calibration.sync_s == pytest.approx(sync)
    dense_10 = 0.4 + sync + link(101_666_816, workers=2, bandwidth_gbps=10)
    assert calibration.per_byte_s == pytest.approx((0.7 - dense_10) / 101_666_816)
    # The calibration rows fit by construction; the 1 Gbit/s row is a prediction.
    for rate, step in (("10gbit", 0.7), ("1gbit", None)):
        dense = results[(2, rate, "dense", None, None)]
        predicted = bench_cluster.step_model_s(dense, calibration.compute_s(dense, 0.4, 0.0), None, None)
        if step is not None:
            assert predicted == pytest.approx(step)
        else:
            assert predicted == pytest.approx(0.7 - link(101_666_816, workers=2, bandwidth_gbps=10)
                                              + link(101_666_816, workers=2, bandwidth_gbps=1))
