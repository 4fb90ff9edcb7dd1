"""PowerSGD (Vogels, Karimireddy & Jaggi 2019) as pure, member-batched tensor functions.

Shape legend:
  P  members in the group (a batch axis here: every member compresses its own matrices)
  n  rows, m  columns of one member's gradient seen as a matrix (`shape[0]` x the rest,
     as torch's powerSGD_hook views it), r  the approximation rank, min(n, m, compression.rank)
  left_Pnr   the paper's (and torch's) P factor;  right_Pmr  its Q factor

One step for one matrix M_Pnm on every worker, as in torch's powerSGD_hook (the
communication between the steps is the exchange's job, distrib/powersgd_exchange.py):
  1. Q    = orthogonalize(Q)            warm start: last step's averaged Q; the first step
                                         draws a Gaussian Q seeded alike on every worker
  2. P    = M Q                         -> all-reduce (sum) over workers
  3. P    = orthogonalize(P)            (so P need not be divided by W)
  4. Q    = M^T P                       -> all-reduce (sum), then / W
  5. M'   = P Q^T                       = P P^T mean_w(M_w): the average, projected on span(P)
  error feedback (if on): residual = M - M', with M the local gradient + residual

Sizes: a matrix sends (n + m) r values instead of n m; it is compressed only when
(n + m) r * min_compression_rate < n m (torch's `_should_compress`), otherwise it is sent
dense, like every 1-D tensor (biases, norms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Factorization:
    """How one member's gradient of some shape travels as rank-r factors."""

    n: int
    m: int
    approx_rank: int  # r: one member sends n r values (P) and m r values (Q)


def factorization(shape: tuple[int, ...], *, approx_rank: int, min_compression_rate: float) -> Factorization | None:
    """The factors for one member's gradient of `shape`, or None when it is sent dense.

    1-D shapes are always dense. (Torch views a vector as a [d, 1] matrix; under any
    min_compression_rate >= 1 that is dense too.)
    """
    if len(shape) < 2:
        return None
    n, m = shape[0], math.prod(shape[1:])
    r = min(n, m, approx_rank)
    if r < 1 or not (n + m) * r * min_compression_rate < n * m:
        return None
    return Factorization(n, m, r)


def orthogonalize(factors_Bkr: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning each matrix's columns (batched over B), via QR.

    Torch's hook uses Gram-Schmidt for r <= 2, which divides by a column's norm: a zero
    column (a member whose gradient matrix is zero) gives NaN unless an epsilon is set.
    Householder QR returns orthonormal columns for any input, rank-deficient included;
    it may flip a column's sign, which changes neither span(P) nor P P^T M.
    """
    return torch.linalg.qr(factors_Bkr, mode="reduced").Q


def initial_right(shape_Pmr: tuple[int, int, int], *, seed: int, dtype: torch.dtype,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """A standard Gaussian Q from a private generator (never the global RNG): every worker
    passes the same seed, so every worker starts from the same Q. Drawn on CPU so that
    workers on different devices agree."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape_Pmr, generator=gen, dtype=dtype).to(device)


def compress_left(matrix_Pnm: torch.Tensor, right_Pmr: torch.Tensor) -> torch.Tensor:
    """P = M Q, per member (Q orthogonalized by the caller)."""
    return torch.bmm(matrix_Pnm, right_Pmr)


def compress_right(matrix_Pnm: torch.Tensor, left_Pnr: torch.Tensor) -> torch.Tensor:
    """Q = M^T P, per member (P orthogonalized by the caller)."""
    return torch.bmm(matrix_Pnm.transpose(1, 2), left_Pnr)


def decompress(left_Pnr: torch.Tensor, right_Pmr: torch.Tensor) -> torch.Tensor:
    """M' = P Q^T, per member."""
    return torch.bmm(left_Pnr, right_Pmr.transpose(1, 2))
