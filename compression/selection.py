"""Exact top-k selection, sped up by a sampled threshold (as in DGC, Lin et al. 2018).

Shape legend:
  P  members,  N  coordinates per member,  k  selected per member,
  S  sampled coordinates per member,  C  candidates of one member (>= k)

`torch.topk` over a large row is the most expensive part of a top-k exchange on CPU
(benchmarks/bench_topk_selection.py: ~260 ms for N = 1e7, k = 1e5, on 2 cores, about
7x slower than what follows). DGC estimates the k-th largest magnitude from a small
random sample and keeps everything above it. We keep DGC's speed but not its
approximation: the threshold is set a few standard deviations *low*, so the candidates
almost surely include the true top k, and an exact `topk` over the few candidates
picks them. If the sample was unlucky (fewer than k candidates) the row falls back to
the full `topk`. The result is the same set `torch.topk` returns (up to ties), whatever
the sample: the random draw only affects speed, never which coordinates are sent.
"""

from __future__ import annotations

import math

import torch

# Below this row length (or above density 1/8) plain topk is as fast; see the benchmark.
MIN_N_FOR_THRESHOLD = 1 << 18
MAX_DENSITY_FOR_THRESHOLD = 1 / 8


def topk_indices(
    abs_PN: torch.Tensor,
    k: int,
    gen: torch.Generator | None = None,
    *,
    min_n: int = MIN_N_FOR_THRESHOLD,
) -> torch.Tensor:
    """`idx_Pk` of the k largest entries of each row of a non-negative `abs_PN` (unsorted).

    Without a generator, or for rows shorter than `min_n`, or dense selections, this is
    plain `torch.topk`.
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
    pos_PS = torch.randint(n, (P, s), generator=gen).to(abs_PN.device)
    sample_PS = abs_PN.gather(1, pos_PS)
    thr_P = sample_PS.topk(r_hi, dim=1, sorted=False).values.min(dim=1).values

    rows = []
    for p in range(P):  # candidate counts differ per row, so rows go one at a time
        row_N = abs_PN[p]
        cand_C = (row_N >= thr_P[p]).nonzero().squeeze(1)
        if cand_C.numel() < k:  # unlucky sample: threshold above the k-th value
            rows.append(row_N.topk(k, sorted=False).indices)
        else:
            rows.append(cand_C[row_N[cand_C].topk(k, sorted=False).indices])
    return torch.stack(rows)
