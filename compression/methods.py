"""The compression methods: one `Method` each, read by everything that depends on the method.

The config's `compression.method` names (config.py), the compressors (compressors.py), the
exchange's collective (distrib/exchange.py), the sweep's ignored keys (launch/sweep.py),
the network model (launch/netmodel.py), the study report and benchmarks/bench_cluster.py
all read `METHODS`. Adding a method is its compressor and one entry here.

Plain data without torch, so the launcher's study tools read it without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Collective(str, Enum):
    """How a step's payloads cross the wire: distrib/exchange.py runs it, launch/netmodel.py prices it."""

    ALL_REDUCE = "all-reduce"  # values summed: every worker sends the same coordinates (or all of them)
    ALL_GATHER = "all-gather"  # values with their int32 column indices, from every worker, scatter-added
    TWO_ALL_REDUCES = "2 all-reduces"  # PowerSGD: the P factors (with the dense 1-D tensors), then the Q factors

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Method:
    name: str  # compression.method
    label: str  # in reports and plots
    # The compression.* keys it reads; a sweep drops combinations that differ only in the
    # others. A method that reads `density` sends k = density * N per member, and so takes
    # per-member densities (PBT mutating density).
    reads: tuple[str, ...]
    collective: Callable[[str], Collective]  # randomk_mode -> the collective of its compressed steps
    compressor: str | None = None  # its class in compressors.py; None: PowerSGD's exchange of its own


_SPARSE = ("density", "error_feedback", "scope", "value_dtype", "warmup_steps", "overlap")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("none", "dense", ("overlap",), lambda mode: Collective.ALL_REDUCE, "NoCompressor"),
    Method("topk", "top-k", _SPARSE, lambda mode: Collective.ALL_GATHER, "TopKCompressor"),
    # shared: every worker draws the same indices, so only values travel, summed.
    Method("randomk", "random-k", (*_SPARSE, "randomk_mode"),
           lambda mode: Collective.ALL_REDUCE if mode == "shared" else Collective.ALL_GATHER, "RandomKCompressor"),
    Method("powersgd", "PowerSGD", ("error_feedback", "scope", "value_dtype", "warmup_steps", "overlap", "rank",
                                    "min_compression_rate"), lambda mode: Collective.TWO_ALL_REDUCES),
)}
