"""Compressors: `compress(tensor) -> Payload` and `decompress(payload) -> tensor`.

In the spirit of GRACE: a compressor is a pure tensor function pair; only the payload
crosses the wire; error feedback is a separate object (`error_feedback.py`).

Shape legend (every tensor name ends with its shape):
  P  members in the group (leading axis of every weight; P = 1 for a plain model)
  N  coordinates per member in this tensor (the flattened trailing dims)
  k  coordinates sent per member: k = max(1, round(density * N)), at most N
  K  all coordinates of a payload: sum of k_P (members may send different k)

Every compressor selects *per member*: row p of `grad_PN` gets its own k entries, so
members never compete for the budget. Members may have densities of their own (PBT
mutates `density`): then row p sends k_P[p] entries. A payload holds its rows
concatenated (`[K]`), whether the k are equal or not, so nothing is padded and bytes stay
exact.

Randomness never touches the global RNG: random-k draws from a private
`torch.Generator` seeded from (seed, step, tensor id[, rank]), as PyTorch's PowerSGD hook
keeps its own generator. Random-k draws on the host, so that every worker, whatever its
device, gets the same indices for a shared seed; on a GPU they are copied from pinned
memory without waiting (`to_device`). Drawing them on the GPU instead would make the host
wait once per member and bucket (`unique`'s output size: 112 waits per step for the
quickstart model, benchmarks/count_host_syncs.py). Top-k's sample only sets a threshold
(the selected set does not depend on it), so it is drawn where the gradient lives.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .methods import METHODS
from .selection import topk_indices
from .transfer import to_device

if TYPE_CHECKING:
    from .config import CompressionConfig

WIRE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
INDEX_DTYPE = torch.int32  # indices on the wire; 4 bytes each (N < 2**31 per member)


def num_selected(n: int, density: float) -> int:
    """k = max(1, round(density * n)), capped at n (so k = 0 only for an empty tensor)."""
    return min(n, max(1, round(density * n)))


def member_counts(n: int, density_P: Sequence[float]) -> tuple[int, ...]:
    """k_P: `num_selected` for each member's own density."""
    bad = [d for d in density_P if not 0.0 < d <= 1.0]
    if bad:
        raise ValueError(f"member densities must be in (0, 1] (as compression.density), got {list(density_P)}")
    return tuple(num_selected(n, d) for d in density_P)


def flat_positions(idx_K: torch.Tensor, shape_PN: tuple[int, int], k_P: Sequence[int]) -> torch.Tensor:
    """Positions `row * N + column` in the flattened `[P * N]` tensor, int64.

    `idx_K` holds column indices laid out as a payload's rows concatenated (row p has
    k_P[p] of them) in its last axis; leading axes (e.g. W workers) are kept.
    """
    P, n = shape_PN
    row_start_P = torch.arange(P, device=idx_K.device) * n
    if len(set(k_P)) == 1:  # one count for all (the usual case) needs no tensor of counts
        return idx_K.long() + row_start_P.repeat_interleave(k_P[0])
    # Counts per member: copied without waiting for the stream, and the output's size given,
    # so a GPU never reads their total back.
    repeats_P = to_device(torch.tensor(k_P, dtype=torch.long), idx_K.device)
    return idx_K.long() + row_start_P.repeat_interleave(repeats_P, output_size=sum(k_P))


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (ints, strings).

    Python's `hash()` of a string differs between processes, so a cryptographic digest
    of the parts' text is used instead: every worker derives the same seed.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seeded_generator(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` whose stream depends only on `parts` (hashed, so nearby keys
    such as (layer 1, draw 0) and (layer 0, draw 1) give unrelated streams); never the
    global RNG."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


@dataclass(frozen=True)
class Payload:
    """What one worker contributes for one tensor at one step: its members' rows concatenated.

    Row p holds k_P[p] entries (all N of a dense payload), so `values_K` and `idx_K` are
    `[K]`, K = sum(k_P), for equal and different k alike. Every worker knows every k_P,
    so an entry's member follows from its position and only its column travels.

    `idx_K` is None for a dense payload, and present for every sparse one so the sender can
    decompress its own payload (error feedback needs what was sent); `indices_on_wire` says
    whether it is transmitted (False for shared random-k, whose receivers redraw the indices).
    """

    values_K: torch.Tensor  # wire dtype
    idx_K: torch.Tensor | None  # int32 column indices; None for a dense payload
    shape_PN: tuple[int, int]
    k_P: tuple[int, ...]  # coordinates each member sends
    indices_on_wire: bool = False

    @property
    def nbytes_P(self) -> tuple[int, ...]:
        """Exact bytes on the wire per member: values in their dtype (+ int32 indices if sent)."""
        per_coordinate = self.values_K.element_size() + (self.idx_K.element_size() if self.indices_on_wire else 0)
        return tuple(k * per_coordinate for k in self.k_P)

    @property
    def nbytes(self) -> int:
        return sum(self.nbytes_P)

    def flat_idx(self) -> torch.Tensor:
        """`[K]` int64 positions of the sent coordinates in the flattened `[P * N]` tensor."""
        return flat_positions(self.idx_K, self.shape_PN, self.k_P)

    @property
    def dense_nbytes(self) -> int:
        """Bytes of the same tensor sent dense in fp32 (the baseline of every ratio)."""
        return self.shape_PN[0] * self.shape_PN[1] * 4


def decompress(payload: Payload, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dense `[P, N]` tensor in `dtype`: the payload's values at their indices, zeros elsewhere."""
    values_K = payload.values_K.to(dtype)
    if payload.idx_K is None:
        return values_K.reshape(payload.shape_PN)
    out_PN = torch.zeros(payload.shape_PN, dtype=dtype, device=values_K.device)
    out_PN.view(-1).scatter_(0, payload.flat_idx(), values_K)
    return out_PN


def _to_wire(values: torch.Tensor, wire_dtype: torch.dtype) -> torch.Tensor:
    """Cast to the wire dtype, clamping to its finite range first.

    Without the clamp a large fp32 value would become inf in fp16 and poison the
    residual; clamped, the excess stays in the residual and is sent later.
    """
    if values.dtype == wire_dtype:
        return values.clone()
    fmax = torch.finfo(wire_dtype).max
    if torch.finfo(values.dtype).max > fmax:
        values = values.clamp(-fmax, fmax)
    return values.to(wire_dtype)


class Compressor(ABC):
    """`compress(grad_PN, step=, tensor_id=, density_P=) -> Payload`; `decompress(payload) -> [P, N]`.

    `density_P` (one density per member, overriding `density`) lets PBT give every member
    its own; the dense compressor sends everything whatever it says.
    """

    def __init__(self, *, density: float = 1.0, value_dtype: str = "fp32") -> None:
        self.density = density
        self.value_dtype = value_dtype
        self.wire_dtype = WIRE_DTYPES[value_dtype]

    @classmethod
    def from_config(cls, config: CompressionConfig, *, seed: int, rank: int) -> Compressor:
        return cls(density=config.density, value_dtype=config.value_dtype)

    @abstractmethod
    def compress(self, grad_PN: torch.Tensor, *, step: int, tensor_id: str,
                 density_P: Sequence[float] | None = None) -> Payload: ...

    def decompress(self, payload: Payload, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return decompress(payload, dtype)

    def counts(self, shape_PN: tuple[int, int], density_P: Sequence[float] | None) -> tuple[int, ...]:
        """k_P for a `[P, N]` tensor: every member at `density`, or each at its own."""
        P, n = shape_PN
        if density_P is None:
            return (num_selected(n, self.density),) * P
        if len(density_P) != P:
            raise ValueError(f"got {len(density_P)} member densities for a gradient of {P} members")
        return member_counts(n, density_P)

    def _sparse(self, grad_PN: torch.Tensor, idx_K: torch.Tensor, k_P: tuple[int, ...], *, on_wire: bool) -> Payload:
        """The payload of the column indices `idx_K` (rows concatenated, row p of k_P[p])."""
        shape_PN = tuple(grad_PN.shape)
        values_K = grad_PN.reshape(-1)[flat_positions(idx_K, shape_PN, k_P)]
        return Payload(_to_wire(values_K, self.wire_dtype), idx_K.to(INDEX_DTYPE), shape_PN, k_P, on_wire)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(density={self.density}, value_dtype={self.value_dtype!r})"


class NoCompressor(Compressor):
    """Dense: every coordinate, values cast to the wire dtype."""

    def compress(self, grad_PN: torch.Tensor, *, step: int, tensor_id: str,
                 density_P: Sequence[float] | None = None) -> Payload:
        P, n = grad_PN.shape
        return Payload(_to_wire(grad_PN, self.wire_dtype).reshape(-1), None, (P, n), (n,) * P)


class TopKCompressor(Compressor):
    """The k largest magnitudes of each member's row (exactly what `torch.topk` on `abs` picks).

    Large rows use a sampled threshold to shrink the `topk` to a few candidates
    (`selection.py`); the chosen set is the same, only faster. The sample comes from a
    private generator seeded by (step, tensor id), so runs are reproducible.
    """

    def compress(self, grad_PN: torch.Tensor, *, step: int, tensor_id: str,
                 density_P: Sequence[float] | None = None) -> Payload:
        k_P = self.counts(tuple(grad_PN.shape), density_P)
        gen = seeded_generator("topk", step, tensor_id, device=grad_PN.device)  # samples where the rows are
        abs_PN = grad_PN.abs()
        rows: list[torch.Tensor | None] = [None] * len(k_P)
        for k in sorted(set(k_P)):  # members that share a k share one batched topk
            members = [p for p, k_p in enumerate(k_P) if k_p == k]
            shared_PN = abs_PN if len(members) == len(k_P) else abs_PN[members]  # all of them: no copy
            for p, idx_k in zip(members, topk_indices(shared_PN, k, gen)):  # unsorted: a scatter does not care
                rows[p] = idx_k
        return self._sparse(grad_PN, torch.cat(rows), k_P, on_wire=True)


class RandomKCompressor(Compressor):
    """k coordinates per member drawn uniformly without replacement.

    shared:      seed = f(seed, step, tensor_id). Every worker draws the same indices,
                 so only values travel and a plain all-reduce sums them.
    independent: seed = f(seed, step, tensor_id, rank). Indices travel with the values.
    Members draw different indices (each row is its own draw from the generator).
    """

    def __init__(
        self,
        *,
        density: float = 0.01,
        value_dtype: str = "fp32",
        mode: str = "shared",
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        super().__init__(density=density, value_dtype=value_dtype)
        if mode not in ("shared", "independent"):
            raise ValueError(f"randomk mode must be 'shared' or 'independent', got {mode!r}")
        self.mode, self.seed, self.rank = mode, seed, rank

    @classmethod
    def from_config(cls, config: CompressionConfig, *, seed: int, rank: int) -> Compressor:
        return cls(
            density=config.density,
            value_dtype=config.value_dtype,
            mode=config.randomk_mode,
            seed=seed,
            rank=rank,
        )

    def generator(self, *, step: int, tensor_id: str) -> torch.Generator:
        parts = (self.seed, step, tensor_id) + ((self.rank,) if self.mode == "independent" else ())
        return seeded_generator(*parts)

    def indices(self, shape_PN: tuple[int, int], *, step: int, tensor_id: str,
                k_P: Sequence[int] | None = None) -> torch.Tensor:
        """int64 column indices, sorted per row, for this (step, tensor[, rank]): `[K]`, the
        rows concatenated, row p of k_P[p] (default: every member at `density`)."""
        k_P = self.counts(shape_PN, None) if k_P is None else k_P
        gen = self.generator(step=step, tensor_id=tensor_id)
        return torch.cat([_sample_without_replacement(shape_PN[1], k, gen) for k in k_P])

    def compress(self, grad_PN: torch.Tensor, *, step: int, tensor_id: str,
                 density_P: Sequence[float] | None = None) -> Payload:
        k_P = self.counts(tuple(grad_PN.shape), density_P)
        idx_K = self.indices(tuple(grad_PN.shape), step=step, tensor_id=tensor_id, k_P=k_P)
        return self._sparse(grad_PN, to_device(idx_K, grad_PN.device), k_P, on_wire=self.mode == "independent")

    def __repr__(self) -> str:
        return (
            f"RandomKCompressor(density={self.density}, value_dtype={self.value_dtype!r}, "
            f"mode={self.mode!r}, seed={self.seed}, rank={self.rank})"
        )


def _sample_without_replacement(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """k distinct indices in [0, n), uniform over k-subsets, sorted; O(k log k) when k << n.

    `randperm(n)` costs O(n) per member per step. Instead: draw with replacement, drop
    duplicates (the distinct set of i.i.d. uniform draws is a uniform subset given its
    size), top up until there are >= k, then keep a uniform k of them.
    """
    if 4 * k >= n:  # dense-ish: a permutation is as cheap and simpler
        return torch.randperm(n, generator=gen)[:k].sort().values
    picked = torch.randint(n, (k + k // 8 + 8,), generator=gen).unique()
    while picked.numel() < k:
        more = torch.randint(n, (k - picked.numel() + 8,), generator=gen)
        picked = torch.cat([picked, more]).unique()
    keep = torch.randperm(picked.numel(), generator=gen)[:k]
    return picked[keep].sort().values


COMPRESSORS: dict[str, type[Compressor]] = {n: globals()[m.compressor] for n, m in METHODS.items() if m.compressor}


def get_compressor_class(name: str) -> type[Compressor]:
    """Registry lookup whose error lists the valid names."""
    try:
        return COMPRESSORS[name]
    except KeyError:
        valid = ", ".join(sorted(COMPRESSORS))
        raise ValueError(f"unknown compressor {name!r}; valid names: {valid}") from None


def build_compressor(config: CompressionConfig, *, seed: int = 0, rank: int = 0) -> Compressor:
    """The compressor that `config.method` names, for this worker."""
    return get_compressor_class(config.method).from_config(config, seed=seed, rank=rank)
