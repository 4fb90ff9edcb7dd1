"""Scope: which coordinates compete for the k slots of a member.

Shape legend:
  P  members in the group (leading axis of every gradient)
  N  coordinates per member in one bucket (a tensor, or all tensors concatenated)

A *bucket* is what one compressor call sees, as a 2-D `[P, N]` tensor:
  layerwise: one bucket per parameter (id = its name); k per parameter.
  global:    one bucket holding every parameter of a member flattened together
             (id = GLOBAL_ID); one top-k over the whole member, as in Stich et al.

Order is deterministic (sorted by name) because every worker must issue the same
collectives on the same buffers in the same order. Empty parameters (numel 0) are left
out of the buckets (nothing to send) and come back as zeros.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping

import torch

GLOBAL_ID = "__global__"


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]  # full shape, P first
    dtype: torch.dtype

    @property
    def numel_per_member(self) -> int:
        return math.prod(self.shape[1:])


@dataclass(frozen=True)
class Bucket:
    id: str
    entries: tuple[Entry, ...]

    @property
    def n(self) -> int:
        return sum(e.numel_per_member for e in self.entries)


class GradLayout:
    """Deterministic `[P, N]` buckets for a `name -> [P, ...]` gradient dict, and back."""

    def __init__(self, entries: list[Entry], scope: str) -> None:
        if scope not in ("global", "layerwise"):
            raise ValueError(f"scope must be 'global' or 'layerwise', got {scope!r}")
        Ps = {e.shape[0] for e in entries}
        if len(Ps) > 1:
            raise ValueError(f"all gradients must share the leading member axis P, got {sorted(Ps)}")
        self.scope = scope
        self.entries = tuple(sorted(entries, key=lambda e: e.name))
        self.P = Ps.pop() if Ps else 0
        nonempty = tuple(e for e in self.entries if e.numel_per_member > 0)
        if scope == "layerwise":
            self.buckets = tuple(Bucket(e.name, (e,)) for e in nonempty)
        else:
            self.buckets = (Bucket(GLOBAL_ID, nonempty),) if nonempty else ()

    @classmethod
    def from_grads(cls, grads: Mapping[str, torch.Tensor], scope: str) -> GradLayout:
        bad = [name for name, g in grads.items() if g.dim() < 1]
        if bad:
            raise ValueError(f"gradients need a leading member axis [P, ...]; scalars: {bad}")
        return cls([Entry(n, tuple(g.shape), g.dtype) for n, g in grads.items()], scope)

    def matches(self, grads: Mapping[str, torch.Tensor]) -> bool:
        """Whether `grads` has this layout's names, shapes and dtypes (a changed model does not)."""
        return [(e.name, e.shape, e.dtype) for e in self.entries] == [
            (n, tuple(grads[n].shape), grads[n].dtype) for n in sorted(grads)]

    def flatten(self, grads: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """`[(bucket id, grad_PN)]` in bucket order.

        Layerwise buckets are views when the gradient is contiguous (no copy); the
        global bucket is one concatenated copy, in the widest of the gradients' dtypes.
        """
        out = []
        for b in self.buckets:
            if len(b.entries) == 1 and self.scope == "layerwise":
                e = b.entries[0]
                out.append((b.id, grads[e.name].reshape(self.P, e.numel_per_member)))
            else:
                dtype = functools.reduce(torch.promote_types, (e.dtype for e in b.entries))
                parts = [grads[e.name].reshape(self.P, -1).to(dtype) for e in b.entries]
                out.append((b.id, torch.cat(parts, dim=1)))
        return out

    def target(self, bucket: Bucket, grads: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """`[P, N]` view of the one gradient a layerwise bucket holds, when its average can
        be written straight into it (contiguous, at least fp32, as averages are summed);
        None otherwise (a global bucket, a narrower or strided gradient)."""
        if self.scope != "layerwise":
            return None
        grad = grads[bucket.entries[0].name]
        if not grad.is_contiguous() or torch.promote_types(grad.dtype, torch.float32) != grad.dtype:
            return None
        return grad.view(self.P, bucket.n)

    def write_back_(self, bucket: Bucket, flat_PN: torch.Tensor, grads: Mapping[str, torch.Tensor]) -> None:
        """Copy a bucket's `[P, N]` into its gradients' own tensors (each in its own dtype)."""
        start = 0
        for e in bucket.entries:
            n = e.numel_per_member
            grads[e.name].copy_(flat_PN[:, start : start + n].reshape(e.shape))
            start += n

    def unflatten(self, flats: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inverse of `flatten`: `{name: [P, ...]}` in each gradient's own dtype, sorted by name."""
        out: dict[str, torch.Tensor] = {}
        device = next(iter(flats.values())).device if flats else None
        for b in self.buckets:
            flat_PN, start = flats[b.id], 0
            for e in b.entries:
                n = e.numel_per_member
                out[e.name] = flat_PN[:, start : start + n].reshape(e.shape).to(e.dtype)
                start += n
        for e in self.entries:  # empty parameters: zeros of the right shape
            if e.name not in out:
                out[e.name] = torch.zeros(e.shape, dtype=e.dtype, device=device)
        return {name: out[name] for name in sorted(out)}
