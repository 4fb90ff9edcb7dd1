"""Truncation selection: who copies whom, as a pure function of the scores and an rng.

Legend: P members; `score_P` is the (penalized) metric per member, identical on every
worker (all-reduced), in the user's orientation (`mode` says whether lower is better).

Ray Tune's rule (`PopulationBasedTraining._quantiles`): rank members worst to best,
n = ceil(P * quantile_fraction), capped at P // 2 so the two sets never meet; the
bottom n each copy a member drawn uniformly from the top n. Ties rank the lower member
index as worse (Ray's stable sort). With P = 8, q = 0.25: the worst 2 copy from the best 2.

Difference from Ray Tune: Ray leaves a trial with a NaN score out of the ranking (it
is never exploited); here a non-finite score ranks worst, and such a member is always a
target, even beyond the bottom n, and never a source.
"""
import math
from collections.abc import Sequence

import numpy as np


class PopulationDiverged(RuntimeError):
    """Every member's score is non-finite: there is no one left to copy."""


def penalized_scores(metric_P: Sequence[float], *, mode: str, bytes_penalty: float = 0.0,
                     bytes_ratio_P: Sequence[float] | None = None) -> np.ndarray:
    """score = metric + bytes_penalty * bytes_ratio (mode min) or metric - ... (mode max).

    The sign follows the mode so that sending more bytes always makes a member worse.
    """
    score_P = np.asarray(metric_P, dtype=np.float64).copy()
    if bytes_penalty:
        if bytes_ratio_P is None:
            raise ValueError("pbt.bytes_penalty is set: pass bytes_ratio_P (bytes sent / dense bytes per member)")
        sign = 1.0 if mode == "min" else -1.0
        score_P += sign * bytes_penalty * np.asarray(bytes_ratio_P, dtype=np.float64)
    return score_P


def rank_worst_first(score_P: np.ndarray, mode: str) -> np.ndarray:
    """Member indices from worst to best; non-finite scores first."""
    goodness_P = -score_P if mode == "min" else score_P.copy()
    goodness_P[~np.isfinite(score_P)] = -np.inf
    return np.argsort(goodness_P, kind="stable")


def quantiles(score_P: np.ndarray, *, mode: str, quantile_fraction: float) -> tuple[list[int], list[int]]:
    """(bottom, top): the worst n and the best n members, n by Ray Tune's rule."""
    members = len(score_P)
    if members <= 1:
        return [], []
    n = min(math.ceil(members * quantile_fraction), members // 2)
    order = rank_worst_first(score_P, mode)
    return [int(m) for m in order[:n]], [int(m) for m in order[members - n:]]


def truncation_pairs(score_P: Sequence[float], *, mode: str, quantile_fraction: float,
                     rng: np.random.Generator, nonfinite_only: bool = False) -> list[tuple[int, int]]:
    """(target, source) pairs, worst target first. Each target draws its source uniformly
    from the finite members of the top quantile.

    `nonfinite_only`: the targets are only the members with a non-finite score (the
    immediate replacement between perturbation rounds); otherwise the bottom quantile
    plus any non-finite member.
    """
    score_P = np.asarray(score_P, dtype=np.float64)
    nonfinite = [int(m) for m in np.flatnonzero(~np.isfinite(score_P))]
    bottom, top = quantiles(score_P, mode=mode, quantile_fraction=quantile_fraction)
    wanted = set(nonfinite) if nonfinite_only else set(bottom) | set(nonfinite)
    targets = [int(m) for m in rank_worst_first(score_P, mode) if int(m) in wanted]
    if not targets:
        return []
    sources = [m for m in top if math.isfinite(score_P[m])]
    if not sources:
        raise PopulationDiverged(
            f"every member's score is non-finite ({score_P.tolist()}): training diverged; "
            "lower the learning rate range or restart from an earlier checkpoint")
    return [(target, sources[int(rng.integers(len(sources)))]) for target in targets]
