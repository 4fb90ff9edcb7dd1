"""Truncation selection (Ray Tune's quantile rule) and explore (Ray Tune's _explore)."""
import math

import numpy as np
import pytest

from pbt.config import Mutation
from pbt.mutations import explore, sample, sample_initial
from pbt.selection import PopulationDiverged, penalized_scores, quantiles, truncation_pairs

LOSS_8 = np.array([3.0, 1.0, 7.0, 2.0, 8.0, 4.0, 6.0, 5.0])  # best: 1, 3; worst: 4, 2


def test_quantiles_p8_q025_both_modes():
    bottom, top = quantiles(LOSS_8, mode="min", quantile_fraction=0.25)
    assert (bottom, top) == ([4, 2], [3, 1])  # worst first, best last
    bottom, top = quantiles(LOSS_8, mode="max", quantile_fraction=0.25)
    assert (bottom, top) == ([1, 3], [2, 4])


@pytest.mark.parametrize("members, fraction, n", [(2, 0.25, 1), (3, 0.25, 1), (4, 0.25, 1), (5, 0.25, 2),
                                                  (8, 0.5, 4), (9, 0.5, 4), (10, 0.2, 2), (1, 0.5, 0)])
def test_quantile_size_follows_ray(members, fraction, n):
    bottom, top = quantiles(np.arange(members, dtype=float), mode="min", quantile_fraction=fraction)
    assert len(bottom) == len(top) == n and not set(bottom) & set(top)


def test_ties_rank_lower_index_as_worse_like_rays_stable_sort():
    assert quantiles(np.ones(4), mode="min", quantile_fraction=0.25) == ([0], [3])


def test_pairs_draw_sources_from_the_top_only_and_are_deterministic():
    pairs = truncation_pairs(LOSS_8, mode="min", quantile_fraction=0.25, rng=np.random.default_rng(0))
    assert [t for t, _ in pairs] == [4, 2] and all(s in (1, 3) for _, s in pairs)
    again = truncation_pairs(LOSS_8, mode="min", quantile_fraction=0.25, rng=np.random.default_rng(0))
    assert pairs == again
    sources = {s for seed in range(30) for _, s in
               truncation_pairs(LOSS_8, mode="min", quantile_fraction=0.25, rng=np.random.default_rng(seed))}
    assert sources == {1, 3}


@pytest.mark.parametrize("mode", ["min", "max"])
def test_nonfinite_members_are_always_targets_and_never_sources(mode):
    scores = np.array([1.0, np.nan, 2.0, np.inf, 3.0, -np.inf])
    pairs = truncation_pairs(scores, mode=mode, quantile_fraction=0.25, rng=np.random.default_rng(1))
    targets = [t for t, _ in pairs]
    assert {1, 3, 5} <= set(targets)
    assert all(math.isfinite(scores[s]) for _, s in pairs)
    only = truncation_pairs(scores, mode=mode, quantile_fraction=0.25, rng=np.random.default_rng(1),
                            nonfinite_only=True)
    assert sorted(t for t, _ in only) == [1, 3, 5]
    assert truncation_pairs(np.array([1.0, 2.0]), mode=mode, quantile_fraction=0.25,
                            rng=np.random.default_rng(1), nonfinite_only=True) == []


def test_all_nonfinite_raises():
    with pytest.raises(PopulationDiverged, match="training diverged"):
        truncation_pairs([np.nan, np.inf], mode="min", quantile_fraction=0.5, rng=np.random.default_rng(0))


def test_bytes_penalty_always_counts_against_the_member():
    ratio = [1.0, 0.01]
    assert penalized_scores([2.0, 2.0], mode="min", bytes_penalty=0.5, bytes_ratio_P=ratio).tolist() == [2.5, 2.005]
    assert penalized_scores([2.0, 2.0], mode="max", bytes_penalty=0.5, bytes_ratio_P=ratio).tolist() == [1.5, 1.995]
    with pytest.raises(ValueError, match="pass bytes_ratio_P"):
        penalized_scores([2.0], mode="min", bytes_penalty=0.5)


# ---------------------------------------------------------------- mutations

LOG = Mutation.model_validate({"loguniform": [1e-4, 1e-2]})
UNI = Mutation.model_validate({"uniform": [0.0, 0.3]})
CHOICE = Mutation.model_validate([0.01, 0.1, 1.0])
MUTATIONS = {"lr": LOG, "dropout": UNI, "density": CHOICE}


def test_samples_stay_in_range_and_initial_is_seeded():
    rng = np.random.default_rng(0)
    lrs = [sample(LOG, rng) for _ in range(500)]
    assert 1e-4 <= min(lrs) and max(lrs) <= 1e-2
    assert 0.3 < np.mean(np.log10(lrs) < -3) < 0.7  # log-uniform: half the draws below 1e-3
    first = sample_initial(MUTATIONS, 6, np.random.default_rng(7))
    assert first == sample_initial(MUTATIONS, 6, np.random.default_rng(7))
    assert sorted(first) == ["density", "dropout", "lr"] and all(len(v) == 6 for v in first.values())
    assert set(first["density"]) <= {0.01, 0.1, 1.0}


def test_explore_perturbs_by_a_factor_clips_to_range_and_shifts_choices():
    values = {"lr": 1e-3, "dropout": 0.29, "density": 0.1, "weight_decay": 0.05}
    seen_ops, seen_density = set(), set()
    for seed in range(200):
        new, ops = explore(values, MUTATIONS, resample_probability=0.25, perturbation_factors=(1.2, 0.8),
                           rng=np.random.default_rng(seed))
        assert new["weight_decay"] == 0.05 and "weight_decay" not in ops  # not mutated: copied
        assert 1e-4 <= new["lr"] <= 1e-2 and 0.0 <= new["dropout"] <= 0.3
        if ops["lr"] != "resample":
            assert math.isclose(new["lr"], 1e-3 * float(ops["lr"][2:]))
        if ops["dropout"] == "* 1.2 (clipped)":
            assert new["dropout"] == 0.3
        if ops["density"].startswith("shift"):
            assert new["density"] in (0.01, 1.0)  # a neighbour of 0.1
        seen_ops |= set(ops.values())
        seen_density.add(new["density"])
    assert {"resample", "* 1.2", "* 0.8", "* 1.2 (clipped)", "shift left", "shift right"} <= seen_ops
    assert seen_density == {0.01, 0.1, 1.0}


def test_choice_at_an_end_stays_put_and_unknown_value_is_resampled():
    ops = {explore({"density": 1.0}, {"density": CHOICE}, resample_probability=0.0, perturbation_factors=(1.2,),
                   rng=np.random.default_rng(seed))[1]["density"] for seed in range(20)}
    assert ops == {"shift left", "shift right (noop)"}
    new, ops = explore({"density": 0.5}, {"density": CHOICE}, resample_probability=0.0,
                       perturbation_factors=(1.2,), rng=np.random.default_rng(0))
    assert ops["density"] == "resample" and new["density"] in CHOICE.values
