"""Exact top-k selection, sped up by a sampled threshold (as in DGC, Lin et al. 2018).

Shape legend:
  P  members,  N  coordinates per member,  k  selected per member,
  S  sampled coordinates per member,  C  candidates of one member (>= k; the buffer of
  the batched path is as wide as the row with most),  M  candidates of all members

`torch.topk` over a large row is the most expensive part of a top-k exchange on CPU
(benchmarks/bench_topk_selection.py: ~260 ms for N = 1e7, k = 1e5, on 2 cores, about
7x slower than what follows), and slow on CUDA too (pytorch#22812). DGC estimates the
k-th largest magnitude from a small random sample and keeps everything above it. We keep
DGC's speed but not its approximation: the threshold is set a few standard deviations
*low*, so the candidates almost surely include the true top k, and an exact `topk` over
the few candidates picks them. If the sample was unlucky (fewer than k candidates) the
row falls back to the full `topk`. The result is the same set `torch.topk` returns (up
to ties), whatever the sample: the random draw only affects speed, never which
coordinates are sent.

Two ways to gather the candidates, with the same result:
  per row   each member's `.nonzero()` on its own: one host sync per member (the count
            sizes the output); the faster on CPU, where a sync costs nothing
  batched   every member at once: the counts come to the host in ONE read per call
            (they size a [P, C] candidate buffer and name the unlucky rows), the
            candidates are compacted with `nonzero_static` (no sync) and one batched
            `topk` picks from the buffer; the path for CUDA, where every sync stalls the
            stream
"""

from __future__ import annotations

import math

import torch

# Below this row length (or above density 1/8) plain topk is as fast; see the benchmark.
MIN_N_FOR_THRESHOLD = 1 << 18
MAX_DENSITY_FOR_THRESHOLD = 1 / 8
# Device types whose candidates are gathered batched by default (per row is faster on CPU:
# bench_topk_selection.py, docs/gpu.md).
BATCHED_DEVICE_TYPES = {"cuda"}


def topk_indices(
    abs_PN: torch.Tensor,
    k: int,
    gen: torch.Generator | None = None,
    *,
    min_n: int = MIN_N_FOR_THRESHOLD,
    batched: bool | None = None,
) -> torch.Tensor:
    """`idx_Pk` of the k largest entries of each row of a non-negative `abs_PN` (unsorted).

    Without a generator, or for rows shorter than `min_n`, or dense selections, this is
    plain `torch.topk`. `gen` draws the sample on its own device (the gradient's, so no
    copy). `batched`: gather the candidates of every row at once (default: on
    BATCHED_DEVICE_TYPES).
    """
    P, n = abs_PN.shape
    if gen is None or n < min_n or k > n * MAX_DENSITY_FOR_THRESHOLD:
        return abs_PN.topk(k, dim=1, sorted=False).indices

    # Sample S entries per row; the k-th largest of N sits near rank r = k*S/N of the sample.
    # Its sample rank is ~Binomial(S, k/N), std <= sqrt(r): r + 3 sqrt(r) + 2 undershoots
    # the true k-th value with probability well under 1%.
    s = min(n, max(1024, n // 100))
    r = k * s / n
    r_hi = min(s, math.ceil(r + 3.0 * math.sqrt(r) + 2.0))
    pos_PS = torch.randint(n, (P, s), generator=gen, device=gen.device).to(abs_PN.device)
    sample_PS = abs_PN.gather(1, pos_PS)
    thr_P = sample_PS.topk(r_hi, dim=1, sorted=False).values.min(dim=1).values

    if batched if batched is not None else abs_PN.device.type in BATCHED_DEVICE_TYPES:
        return _batched_candidates(abs_PN, k, thr_P)
    rows = []
    for p in range(P):  # candidate counts differ per row, so rows go one at a time
        row_N = abs_PN[p]
        cand_C = (row_N >= thr_P[p]).nonzero().squeeze(1)
        if cand_C.numel() < k:  # unlucky sample: threshold above the k-th value
            rows.append(row_N.topk(k, sorted=False).indices)
        else:
            rows.append(cand_C[row_N[cand_C].topk(k, sorted=False).indices])
    return torch.stack(rows)


def _batched_candidates(abs_PN: torch.Tensor, k: int, thr_P: torch.Tensor) -> torch.Tensor:
    """The per-row path's result for every row at once, with one host read (the counts)."""
    P, n = abs_PN.shape
    mask_PN = abs_PN >= thr_P.unsqueeze(1)
    count_P = mask_PN.sum(dim=1)
    counts = count_P.tolist()  # the call's one sync: sizes the buffer, names the unlucky rows
    # Row-major positions of every candidate: rows in order, columns ascending within a row.
    flat_M = mask_PN.view(-1).nonzero_static(size=sum(counts)).squeeze(1)
    row_M = flat_M // n
    slot_M = torch.arange(flat_M.numel(), device=abs_PN.device) - (count_P.cumsum(0) - count_P)[row_M]
    width = max(max(counts), k)
    # Padding at -1, below every magnitude: never picked from a row with >= k candidates.
    cand_PC = abs_PN.new_full((P, width), -1.0)
    cand_PC[row_M, slot_M] = abs_PN.view(-1)[flat_M]
    col_PC = torch.zeros((P, width), dtype=torch.long, device=abs_PN.device)
    col_PC[row_M, slot_M] = flat_M - row_M * n
    idx_Pk = col_PC.gather(1, cand_PC.topk(k, dim=1, sorted=False).indices)
    unlucky = [p for p, count in enumerate(counts) if count < k]  # threshold above the k-th value
    if unlucky:
        idx_Pk[unlucky] = abs_PN[unlucky].topk(k, dim=1, sorted=False).indices
    return idx_Pk
