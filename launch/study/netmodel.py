"""A simple, documented network model: what one training step would cost on a cluster.

Pure functions; no Ray, no torch. Used by the compression study (launch/study/report.py)
to project measured runs onto W workers at a given link bandwidth.

Symbols (every formula below uses them):
  W    workers (ranks), one per node, each on its own link of bandwidth β
  β    link bandwidth, given in Gbit/s; in bytes/s it is β · 1e9 / 8
  α    per-message latency in seconds (default DEFAULT_LATENCY_S = 10 µs, a TCP/RoCE-ish
       figure; InfiniBand is nearer 2 µs, cloud TCP nearer 30 µs; pass your own)
  S    payload bytes ONE worker contributes per step: the `bytes_sent` a run records in
       metrics.jsonl (per member; times P members), exact, wire dtypes included
       (values fp32/fp16/bf16 + int32 indices where indices travel). For dense training
       S = dense_bytes = 4 bytes per coordinate.

Ring all-reduce (dense gradients; shared-seed random-k, where every worker sends values
for the SAME k coordinates, so the k values can be summed element-wise):
    T_ar(S) = 2(W-1)/W · S/β + 2(W-1)·α
  a reduce-scatter then an all-gather, each W-1 rounds; in every round each worker sends
  S/W bytes to its neighbour (so 2(W-1)/W · S bytes in all), and every round is one
  message, hence 2(W-1) latencies (Thakur, Rabenseifner & Gropp 2005; Patarasuk & Yuan
  2009). The bandwidth term is optimal; the latency term is the ring's weakness at large
  W (NCCL/MPI switch to trees or recursive doubling, ~log2 W latencies, for small
  messages), so at W = 128 and small payloads this model is pessimistic for dense and
  shared random-k alike.

Ring all-gather (top-k; independent random-k: each worker's coordinates differ, so values
and indices must be gathered, W payloads, not summed):
    T_ag(S) = (W-1) · S/β + (W-1)·α
  W-1 rounds, each forwarding one worker's whole payload S. The received volume grows with
  W, which is why sparse all-gather loses to a dense all-reduce once W·density is large.

Two ring all-reduces (PowerSGD: the P factors with the dense 1-D tensors, then the Q
factors, which need the all-reduced P first, so the two cannot be merged):
    T_2ar(S) = T_ar(S_P) + T_ar(S_Q) = 2(W-1)/W · S/β + 4(W-1)·α,   S = S_P + S_Q
  the bandwidth term is linear in the bytes, so only the total S matters; the latency
  term counts twice.

Projected step time = measured compute time + T_comm. Compute is taken as measured (the
study says which measurement it uses); compression's own cost (top-k selection, error
feedback) is part of compute. One worker (W = 1) communicates nothing: T_comm = 0.

Overlap with the backward pass (`overlapped_step_s`; DDP and Horovod send each bucket of
gradients as soon as the backward pass has produced it): the gradients travel in n
buckets; bucket b is ready at b/n · T_bwd and takes T_comm/n on the link, one bucket at a
time. The last bucket then leaves the link at max over b of (b/n · T_bwd + (n-b+1)/n ·
T_comm), and that expression is linear in b, so the maximum sits at b = 1 or b = n:
    T_step = T_rest + max(T_bwd + T_comm/n, T_comm + T_bwd/n),   T_rest = compute - T_bwd
i.e. max(backward, communication) plus whichever part cannot hide: the last bucket's
communication (a link faster than the backward) or the first bucket's backward (a slower
one). n = 1 is no overlap (T_rest + T_bwd + T_comm); n -> infinity gives
T_rest + max(T_bwd, T_comm). Assumptions: equal buckets, ready at an even pace through the
backward pass; the link carries one bucket at a time at the full rate; communicating does
not slow the backward pass down (on a machine whose cores also run the collective's
threads and the kernel's network work it does, so this is a lower bound there); per-bucket
compression cost is part of T_bwd or T_rest as measured.

Decompressing gathered payloads (all-gather methods only) is compute that a one-worker
measurement does not contain: every worker unpacks and scatter-adds the K entries of each
of the W-1 others,
    T_dec = (W-1) · K · c
with K the entries one worker sends per step and c seconds per received entry, a property
of the machine (benchmarks/bench_cluster.py measures it with the exchange's own code).
An all-reduce sums in the collective itself, so shared random-k and dense have no T_dec.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from compression import METHODS, Collective

DEFAULT_LATENCY_S = 10e-6
DEFAULT_WORKERS = (2, 8, 32, 128)
DEFAULT_BANDWIDTHS_GBPS = (1.0, 10.0, 100.0)

ALL_REDUCE, ALL_GATHER, TWO_ALL_REDUCES = Collective.ALL_REDUCE, Collective.ALL_GATHER, Collective.TWO_ALL_REDUCES


def bytes_per_second(bandwidth_gbps: float) -> float:
    """Gbit/s -> bytes/s (decimal giga, as links are quoted): 1 Gbit/s = 125,000,000 B/s."""
    if bandwidth_gbps <= 0:
        raise ValueError(f"bandwidth must be > 0 Gbit/s, got {bandwidth_gbps}")
    return bandwidth_gbps * 1e9 / 8


def _check(payload_bytes: float, workers: int) -> None:
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if payload_bytes < 0:
        raise ValueError(f"payload must be >= 0 bytes, got {payload_bytes}")


def ring_all_reduce_s(payload_bytes: float, *, workers: int, bandwidth_gbps: float,
                      latency_s: float = DEFAULT_LATENCY_S) -> float:
    """T_ar = 2(W-1)/W · S/β + 2(W-1)·α seconds; 0 for one worker."""
    _check(payload_bytes, workers)
    W = workers
    if W == 1:
        return 0.0
    return 2 * (W - 1) / W * payload_bytes / bytes_per_second(bandwidth_gbps) + 2 * (W - 1) * latency_s


def ring_all_gather_s(payload_bytes: float, *, workers: int, bandwidth_gbps: float,
                      latency_s: float = DEFAULT_LATENCY_S) -> float:
    """T_ag = (W-1) · S/β + (W-1)·α seconds, S = one worker's payload; 0 for one worker."""
    _check(payload_bytes, workers)
    W = workers
    if W == 1:
        return 0.0
    return (W - 1) * payload_bytes / bytes_per_second(bandwidth_gbps) + (W - 1) * latency_s


def two_ring_all_reduces_s(payload_bytes: float, *, workers: int, bandwidth_gbps: float,
                           latency_s: float = DEFAULT_LATENCY_S) -> float:
    """T_2ar = T_ar(S_P) + T_ar(S_Q) = 2(W-1)/W · S/β + 4(W-1)·α seconds, S = S_P + S_Q the
    payload of both (PowerSGD): T_ar(S) and the second all-reduce's latencies; 0 for one worker."""
    one = ring_all_reduce_s(payload_bytes, workers=workers, bandwidth_gbps=bandwidth_gbps, latency_s=latency_s)
    return one + 2 * (workers - 1) * latency_s


def gathered_decompress_s(entries: float, *, workers: int, seconds_per_entry: float) -> float:
    """T_dec = (W-1) · K · c seconds: scatter-adding the other workers' K entries each."""
    if workers < 1 or entries < 0 or seconds_per_entry < 0:
        raise ValueError(f"need workers >= 1, entries >= 0 and seconds_per_entry >= 0, got {workers}, "
                         f"{entries}, {seconds_per_entry}")
    return (workers - 1) * entries * seconds_per_entry


FORMULAS = {ALL_REDUCE: ring_all_reduce_s, ALL_GATHER: ring_all_gather_s, TWO_ALL_REDUCES: two_ring_all_reduces_s}


def collective_for(method: str, randomk_mode: str = "shared") -> Collective:
    """The collective sparsepop uses for a compression method (compression/methods.py)."""
    if method not in METHODS:
        raise ValueError(f"unknown compression method {method!r}; expected {', '.join(METHODS)}")
    return METHODS[method].collective(randomk_mode)


def communication_s(method: str, payload_bytes: float, *, workers: int, bandwidth_gbps: float,
                    randomk_mode: str = "shared", latency_s: float = DEFAULT_LATENCY_S) -> float:
    """Seconds one step's gradient exchange takes under the model."""
    formula = FORMULAS[collective_for(method, randomk_mode)]
    return formula(payload_bytes, workers=workers, bandwidth_gbps=bandwidth_gbps, latency_s=latency_s)


def projected_step_s(compute_s: float, method: str, payload_bytes: float, *, workers: int,
                     bandwidth_gbps: float, randomk_mode: str = "shared",
                     latency_s: float = DEFAULT_LATENCY_S) -> float:
    """Measured compute time + modelled communication time (no overlap)."""
    return compute_s + communication_s(method, payload_bytes, workers=workers, bandwidth_gbps=bandwidth_gbps,
                                       randomk_mode=randomk_mode, latency_s=latency_s)


def overlapped_step_s(compute_s: float, comm_s: float, *, backward_s: float, buckets: int) -> float:
    """T_rest + max(T_bwd + T_comm/n, T_comm + T_bwd/n) seconds, T_rest = compute - T_bwd:
    communication of n buckets overlapping the backward pass (see the module docstring)."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    if comm_s < 0 or not 0 <= backward_s <= compute_s:
        raise ValueError(f"need comm_s >= 0 and 0 <= backward_s <= compute_s, got comm_s={comm_s}, "
                         f"backward_s={backward_s}, compute_s={compute_s}")
    rest_s = compute_s - backward_s
    return rest_s + max(backward_s + comm_s / buckets, comm_s + backward_s / buckets)


# ---------------------------------------------------------------- projection table


@dataclass(frozen=True)
class MethodRow:
    """One configuration of the study: its measured compute time per step and the exact
    payload one worker sends per step (bytes_sent × members)."""

    name: str  # e.g. "topk d=0.01 ef"
    method: str  # none / topk / randomk / powersgd
    compute_s: float
    payload_bytes: float
    randomk_mode: str = "shared"
    density: float | None = None
    final_val_loss: float | None = None


@dataclass(frozen=True)
class Cell:
    """One (W, β) cell: every row's projected step time and the fastest row."""

    workers: int
    bandwidth_gbps: float
    step_s: dict[str, float]  # row name -> projected step time
    winner: str

    def comm_share(self, row: MethodRow) -> float:
        """Fraction of the projected step spent communicating."""
        total = self.step_s[row.name]
        return (total - row.compute_s) / total if total > 0 else 0.0


@dataclass(frozen=True)
class Projection:
    rows: tuple[MethodRow, ...]
    workers: tuple[int, ...]
    bandwidths_gbps: tuple[float, ...]
    latency_s: float
    cells: dict[tuple[int, float], Cell] = field(default_factory=dict)

    def cell(self, workers: int, bandwidth_gbps: float) -> Cell:
        return self.cells[(workers, float(bandwidth_gbps))]


def project(rows: list[MethodRow], *, workers=DEFAULT_WORKERS, bandwidths_gbps=DEFAULT_BANDWIDTHS_GBPS,
            latency_s: float = DEFAULT_LATENCY_S) -> Projection:
    """Projected step time of every row at every W and β, and the fastest row per cell
    (ties go to the row listed first)."""
    if not rows:
        raise ValueError("no rows to project")
    names = [row.name for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"row names must be unique, got {names}")
    cells = {}
    for W in workers:
        for bw in bandwidths_gbps:
            times = {row.name: projected_step_s(row.compute_s, row.method, row.payload_bytes, workers=W,
                                                bandwidth_gbps=bw, randomk_mode=row.randomk_mode,
                                                latency_s=latency_s)
                     for row in rows}
            winner = min(names, key=lambda n: times[n])  # min keeps the first of equals
            cells[(W, float(bw))] = Cell(W, float(bw), times, winner)
    return Projection(tuple(rows), tuple(workers), tuple(float(b) for b in bandwidths_gbps), latency_s, cells)


def crossover_workers(dense_bytes: float, sparse_bytes: float) -> float:
    """Bandwidth terms only: top-k's all-gather beats a dense ring all-reduce while
    (W-1)·S_sparse < 2(W-1)/W · S_dense, i.e. while W < 2·S_dense/S_sparse. Returns that W
    (e.g. top-k 1% fp32 sends 2% of dense: W < 100)."""
    if sparse_bytes <= 0:
        raise ValueError("sparse payload must be > 0 bytes")
    return 2 * dense_bytes / sparse_bytes
