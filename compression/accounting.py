"""Byte accounting: what one worker puts on the wire per member per step.

  bytes_sent  = values (wire dtype) + int32 indices when indices travel
  dense_bytes = the same gradient as dense fp32 (4 bytes per coordinate)

Per member, with k = density * N (each member its own density when PBT mutates it):
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
    """Bytes per member for one step (members with their own densities send their own k)."""

    bytes_sent_P: tuple[int, ...]  # per member: values + indices in wire dtypes
    dense_bytes: int  # per member (the same for all): the fp32 dense gradient
    dense_step: bool  # True when this step sent the dense gradient (method none / warm-up)

    @property
    def members(self) -> int:
        return len(self.bytes_sent_P)

    @property
    def ratio_P(self) -> tuple[float, ...]:
        """bytes_sent / dense_bytes per member (0.02 for top-k 1% fp32): what pbt.bytes_penalty weighs."""
        return tuple(b / self.dense_bytes if self.dense_bytes else 0.0 for b in self.bytes_sent_P)

    @property
    def bytes_sent(self) -> int:
        """Per member when all members send the same; otherwise the mean, rounded down."""
        return sum(self.bytes_sent_P) // max(self.members, 1)

    @property
    def ratio(self) -> float:
        """The mean of `ratio_P`."""
        return sum(self.ratio_P) / max(self.members, 1)

    def as_dict(self) -> dict:
        return {**asdict(self), "members": self.members, "bytes_sent": self.bytes_sent,
                "ratio_P": self.ratio_P, "ratio": self.ratio}


def byte_report(payloads: Iterable[Payload], *, members: int, dense_step: bool) -> ByteReport:
    """Sum the payloads of one step into per-member byte counts."""
    sent_P, dense = [0] * members, 0
    for p in payloads:
        sent_P = [total + n for total, n in zip(sent_P, p.nbytes_P, strict=True)]
        dense += p.dense_nbytes
    return ByteReport(tuple(sent_P), dense // max(members, 1), dense_step)
