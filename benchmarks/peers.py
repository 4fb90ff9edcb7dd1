"""The peers benchmarks/bench_cluster.py measures beside sparsepop: what a user would otherwise
run to train the same model on the same links (benchmarks/peer_worker.py trains them).

  deepspeed     DeepSpeed's own gradient all-reduce (engine defaults, ZeRO 0): one all-reduce
                of the whole gradient after the backward pass, in DeepSpeed's buckets
  ddp           torch DDP, default buckets (the first 1 MiB, then 25 MiB), each all-reduced
                as soon as the backward pass has filled it
  ddp-powersgd  DDP with torch's powerSGD_hook at matrix_approximation_rank r, torch's
                defaults otherwise except start_powerSGD_iter (see peer_worker.py)

Pure functions (no torch, no Ray): names, wire bytes, buckets and the table's order,
tested in tests/unit/test_bench_peers.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from compression import Collective
from compression.powersgd import factorization


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    collective: Collective  # how launch/study/netmodel.py prices its step's bytes
    takes_rank: bool  # a row per --ranks value (PowerSGD), else one row
    overlaps: bool  # sends buckets while the backward pass runs (netmodel.overlapped_step_s)


PEERS: dict[str, Peer] = {p.name: p for p in (
    Peer("deepspeed", "DeepSpeed all-reduce", Collective.ALL_REDUCE, takes_rank=False, overlaps=False),
    Peer("ddp", "DDP", Collective.ALL_REDUCE, takes_rank=False, overlaps=True),
    # Per bucket: the uncompressed tensors and the P factors, then the Q factors.
    Peer("ddp-powersgd", "DDP powerSGD_hook", Collective.TWO_ALL_REDUCES, takes_rank=True, overlaps=True),
)}

# torch's DDP defaults (torch.distributed.constants / DistributedDataParallel.__init__).
DDP_FIRST_BUCKET_BYTES = 1024 * 1024
DDP_BUCKET_BYTES = 25 * 1024 * 1024
# torch's PowerSGDState default.
TORCH_MIN_COMPRESSION_RATE = 2.0

# The table puts rows that do the same job side by side: dense exchanges, then each sparse
# density, then each PowerSGD rank with torch's hook at that rank.
FAMILY = {"deepspeed": 0, "ddp": 0, "dense": 0, "ddp-powersgd": 2, "powersgd": 2}
ORDER = ("deepspeed", "ddp", "dense", "topk-fp32", "topk-fp16", "randomk-shared", "randomk-indep",
         "ddp-powersgd", "powersgd")


def is_peer(method: str) -> bool:
    return method in PEERS


def configurations(methods, densities, ranks, peers=()):
    """(method, density, rank) of every job: sparsepop's methods (dense once, the sparse
    ones at each density, PowerSGD at each rank), then the peers (PowerSGD's at each rank)."""
    for method in methods:
        if method == "dense":
            yield method, None, None
        elif method == "powersgd":
            yield from ((method, None, rank) for rank in ranks)
        else:
            yield from ((method, density, None) for density in densities)
    for peer in peers:
        yield from ((peer, None, rank) for rank in ranks) if PEERS[peer].takes_rank else [(peer, None, None)]


def row_order(record: dict) -> tuple:
    """Sort key of a table row: W, link, then family (dense / sparse / PowerSGD), density
    (largest first) or rank, then peers before sparsepop within each."""
    family = FAMILY.get(record["method"], 1)
    return (record["workers"], record["rate_bps"], family, -(record.get("density") or 1),
            record.get("rank") or 0, ORDER.index(record["method"]))


def wire_bytes(shapes, *, peer: str, rank: int | None, bytes_per_value: int = 4) -> int:
    """Bytes one worker puts into the collectives per step (after torch's PowerSGD warm-up),
    for parameters of `shapes` as the peer sees them (plain, no member axis): the dense
    gradient, or for powerSGD_hook per tensor (n + m)·r values when torch's rule compresses
    it (compression/powersgd.factorization: the rule sparsepop's PowerSGD shares), else n·m."""
    if not PEERS[peer].takes_rank:
        return bytes_per_value * sum(math.prod(shape) for shape in shapes)
    total = 0
    for shape in shapes:
        f = factorization(tuple(shape), approx_rank=rank, min_compression_rate=TORCH_MIN_COMPRESSION_RATE)
        total += (f.n + f.m) * f.approx_rank if f else math.prod(shape)
    return bytes_per_value * total


def ddp_buckets(sizes_bytes) -> int:
    """DDP's bucket count for parameters of these gradient sizes (in registration order):
    buckets fill in reverse order, the first up to DDP_FIRST_BUCKET_BYTES, the others up to
    DDP_BUCKET_BYTES, a bucket closing once it reaches its cap (a larger tensor gets one of
    its own)."""
    buckets, filled, cap = 0, 0, DDP_FIRST_BUCKET_BYTES
    for size in reversed(list(sizes_bytes)):
        filled += size
        if filled >= cap:
            buckets, filled, cap = buckets + 1, 0, DDP_BUCKET_BYTES
    return buckets + (1 if filled else 0)
