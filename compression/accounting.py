"""Byte accounting: what one worker puts on the wire per member per step.

  bytes_sent  = values (wire dtype) + int32 indices when indices travel
  dense_bytes = the same gradient as dense fp32 (4 bytes per coordinate)

Per member, with k = density * N:
  top-k / independent random-k, fp32:  8k / 4N = 2 * density      (1% -> 2%)
  top-k, fp16 values:                  6k / 4N = 1.5 * density    (1% -> 1.5%)
  shared random-k, fp32:               4k / 4N = density          (1% -> 1%)
  shared random-k, fp16:               2k / 4N = 0.5 * density    (1% -> 0.5%)

This counts the payload a worker contributes, not the collective's traffic pattern
(a ring all-reduce moves about 2x its buffer; an all-gather delivers W payloads).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

from .compressors import Payload


@dataclass(frozen=True)
class ByteReport:
    """Bytes per member for one step (every member sends the same k per bucket)."""

    bytes_sent: int  # per member: values + indices in wire dtypes
    dense_bytes: int  # per member: the fp32 dense gradient
    members: int  # P
    dense_step: bool  # True when this step sent the dense gradient (method none / warm-up)

    @property
    def ratio(self) -> float:
        """bytes_sent / dense_bytes (0.02 for top-k 1% fp32)."""
        return self.bytes_sent / self.dense_bytes if self.dense_bytes else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def byte_report(payloads: Iterable[Payload], *, members: int, dense_step: bool) -> ByteReport:
    """Sum the payloads of one step into per-member byte counts."""
    sent = dense = 0
    for p in payloads:
        sent += p.nbytes
        dense += p.dense_nbytes
    P = max(members, 1)
    return ByteReport(sent // P, dense // P, members, dense_step)
