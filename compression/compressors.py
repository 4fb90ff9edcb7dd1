"""Compressors: `compress(tensor) -> Payload` and `decompress(payload) -> tensor`.

In the spirit of GRACE: a compressor is a pure tensor function pair; only the payload
crosses the wire; error feedback is a separate object (`error_feedback.py`).

Shape legend (every tensor name ends with its shape):
  P  members in the group (leading axis of every weight; P = 1 for a plain model)
  N  coordinates per member in this tensor (the flattened trailing dims)
  k  coordinates sent per member: k = max(1, round(density * N)), at most N

Every compressor selects *per member*: row p of `grad_PN` gets its own k entries, so
per-member byte counts are equal and members never compete for the budget.

Randomness never touches the global RNG: random-k draws from a private
`torch.Generator` seeded from (seed, step, tensor id[, rank]), as PyTorch's PowerSGD hook
keeps its own generator. The draw happens on CPU so that every worker, whatever its
device, gets the same indices for a shared seed.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from .config import CompressionConfig
from .selection import topk_indices

WIRE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
INDEX_DTYPE = torch.int32  # indices on the wire; 4 bytes each (N < 2**31 per member)

# How a payload must cross the wire; the exchange picks the collective from this.
#   dense:        values_PN, all-reduce (sum) then divide by world size
#   sparse:       (values_Pk, idx_Pk), all-gather, scatter-add, divide by world size
#   values_only:  values_Pk, all-reduce; indices are identical on every worker
Wire = Literal["dense", "sparse", "values_only"]


def num_selected(n: int, density: float) -> int:
    """k = max(1, round(density * n)), capped at n (so k = 0 only for an empty tensor)."""
    return min(n, max(1, round(density * n)))


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (ints, strings).

    Python's `hash()` of a string differs between processes, so a cryptographic digest
    of the parts' text is used instead: every worker derives the same seed.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class Payload:
    """What one worker contributes for one tensor at one step.

    `idx_Pk` is always present for sparse payloads so the sender can decompress its own
    payload (error feedback needs what was sent); `indices_on_wire` says whether it is
    transmitted (False for shared random-k, whose receivers redraw the same indices).
    """

    values_Pk: torch.Tensor  # wire dtype; [P, N] for a dense payload
    idx_Pk: torch.Tensor | None  # int32, None for a dense payload
    shape_PN: tuple[int, int]
    wire: Wire
    indices_on_wire: bool

    @property
    def nbytes(self) -> int:
        """Exact bytes on the wire: values in their dtype (+ int32 indices if sent)."""
        n = self.values_Pk.numel() * self.values_Pk.element_size()
        if self.indices_on_wire and self.idx_Pk is not None:
            n += self.idx_Pk.numel() * self.idx_Pk.element_size()
        return n

    @property
    def dense_nbytes(self) -> int:
        """Bytes of the same tensor sent dense in fp32 (the baseline of every ratio)."""
        return self.shape_PN[0] * self.shape_PN[1] * 4

    def with_values(self, values_Pk: torch.Tensor) -> Payload:
        """The same selection carrying other values (e.g. the all-reduced sum)."""
        return Payload(values_Pk, self.idx_Pk, self.shape_PN, self.wire, self.indices_on_wire)


def decompress(payload: Payload, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dense `[P, N]` tensor in `dtype`: the payload's values at their indices, zeros elsewhere."""
    values_Pk = payload.values_Pk.to(dtype)
    if payload.idx_Pk is None:
        return values_Pk.reshape(payload.shape_PN)
    out_PN = torch.zeros(payload.shape_PN, dtype=dtype, device=values_Pk.device)
    return out_PN.scatter_(1, payload.idx_Pk.long(), values_Pk)


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
    """`compress(grad_PN, step=, tensor_id=) -> Payload`; `decompress(payload) -> [P, N]`."""

    name: ClassVar[str]
    wire: ClassVar[Wire]

    def __init__(self, *, density: float = 1.0, value_dtype: str = "fp32") -> None:
        self.density = density
        self.value_dtype = value_dtype
        self.wire_dtype = WIRE_DTYPES[value_dtype]

    @classmethod
    def from_config(cls, config: CompressionConfig, *, seed: int, rank: int) -> Compressor:
        return cls(density=config.density, value_dtype=config.value_dtype)

    @abstractmethod
    def compress(self, grad_PN: torch.Tensor, *, step: int, tensor_id: str) -> Payload: ...

    def decompress(self, payload: Payload, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return decompress(payload, dtype)

    def _sparse(self, grad_PN: torch.Tensor, idx_Pk: torch.Tensor, *, on_wire: bool) -> Payload:
        values_Pk = _to_wire(grad_PN.gather(1, idx_Pk), self.wire_dtype)
        return Payload(
            values_Pk, idx_Pk.to(INDEX_DTYPE), tuple(grad_PN.shape), self.wire, on_wire
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(density={self.density}, value_dtype={self.value_dtype!r})"


class NoCompressor(Compressor):
    """Dense: every coordinate, values cast to the wire dtype."""

    name = "none"
    wire = "dense"

    def compress(self, grad_PN: torch.Tensor, *, step: int, tensor_id: str) -> Payload:
        values_PN = _to_wire(grad_PN, self.wire_dtype)
        return Payload(values_PN, None, tuple(grad_PN.shape), self.wire, False)


class TopKCompressor(Compressor):
    """The k largest magnitudes of each member's row (exactly what `torch.topk` on `abs` picks).

    Large rows use a sampled threshold to shrink the `topk` to a few candidates
    (`selection.py`); the chosen set is the same, only faster. The sample comes from a
    private generator seeded by (step, tensor id), so runs are reproducible.
    """

    name = "topk"
    wire = "sparse"

    def compress(self, grad_PN: torch.Tensor, *, step: int, tensor_id: str) -> Payload:
        k = num_selected(grad_PN.shape[1], self.density)
        gen = torch.Generator(device="cpu").manual_seed(derive_seed("topk", step, tensor_id))
        idx_Pk = topk_indices(grad_PN.abs(), k, gen)  # unsorted: a scatter does not care
        return self._sparse(grad_PN, idx_Pk, on_wire=True)


class RandomKCompressor(Compressor):
    """k coordinates per member drawn uniformly without replacement.

    shared:      seed = f(seed, step, tensor_id). Every worker draws the same indices,
                 so only values travel and a plain all-reduce sums them.
    independent: seed = f(seed, step, tensor_id, rank). Indices travel with the values.
    Members draw different indices (each row is its own draw from the generator).
    """

    name = "randomk"

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

    @property
    def wire(self) -> Wire:  # type: ignore[override]
        return "values_only" if self.mode == "shared" else "sparse"

    def generator(self, *, step: int, tensor_id: str) -> torch.Generator:
        parts = (self.seed, step, tensor_id) + ((self.rank,) if self.mode == "independent" else ())
        return torch.Generator(device="cpu").manual_seed(derive_seed(*parts))

    def indices(self, shape_PN: tuple[int, int], *, step: int, tensor_id: str) -> torch.Tensor:
        """`idx_Pk` (int64, sorted per row) for this (step, tensor[, rank])."""
        P, n = shape_PN
        k = num_selected(n, self.density)
        gen = self.generator(step=step, tensor_id=tensor_id)
        return torch.stack([_sample_without_replacement(n, k, gen) for _ in range(P)])

    def compress(self, grad_PN: torch.Tensor, *, step: int, tensor_id: str) -> Payload:
        idx_Pk = self.indices(tuple(grad_PN.shape), step=step, tensor_id=tensor_id)
        return self._sparse(grad_PN, idx_Pk.to(grad_PN.device), on_wire=self.mode == "independent")

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


COMPRESSORS: dict[str, type[Compressor]] = {
    cls.name: cls for cls in (NoCompressor, TopKCompressor, RandomKCompressor)
}


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


def dense_compressor() -> Compressor:
    """Exact dense fp32, used during warm-up whatever the configured method."""
    return NoCompressor(density=1.0, value_dtype="fp32")
