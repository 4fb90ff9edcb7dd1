"""PBTController decisions, events as JSON lines, replay, and checkpointed state."""
import io
import math

import numpy as np
import pytest
import torch

from pbt.config import PBTConfig
from pbt.controller import PBTController
from pbt.events import Event, read_events, replay

P = 8
DEFAULTS = {"lr": 1e-3, "weight_decay": 0.01, "warmup": 0.05}


def config(**overrides) -> PBTConfig:
    return PBTConfig(**{"perturbation_interval": 10,
                        "hyperparam_mutations": {"lr": {"loguniform": [1e-4, 1e-2]}, "dropout": [0.0, 0.1, 0.2]},
                        **overrides})


def controller(seed=0, **overrides) -> PBTController:
    return PBTController(config(**overrides), members=P, seed=seed, defaults=DEFAULTS)


def losses(step: int) -> list[float]:
    return list(np.random.default_rng(step).uniform(1.0, 3.0, size=P))


def test_initial_hyperparams_are_drawn_per_member_and_seeded():
    c = controller(seed=3)
    assert sorted(c.hyperparams) == ["dropout", "lr", "warmup", "weight_decay"]
    assert c.hyperparams["weight_decay"] == [0.01] * P  # not mutated: the default
    assert len(set(c.hyperparams["lr"])) == P and all(1e-4 <= x <= 1e-2 for x in c.hyperparams["lr"])
    assert c.hyperparams == controller(seed=3).hyperparams != controller(seed=4).hyperparams
    lr_P = c.hyperparams_tensor("lr", dtype=torch.float64)
    assert lr_P.shape == (P,) and lr_P.tolist() == c.hyperparams["lr"]
    with pytest.raises(KeyError, match="neither mutated nor in defaults"):
        c.hyperparams_tensor("density")
    with pytest.raises(ValueError, match="valid names"):
        PBTController(config(), members=P, seed=0, defaults={"momentum": 0.9})


def test_rounds_only_at_perturbation_steps():
    c = controller()
    assert [s for s in range(35) if c.decide(s, losses(s))] == [10, 20, 30]


def test_a_round_copies_top_quartile_onto_bottom_quartile_and_explores():
    c = controller()
    before = {m: c.member_hyperparams(m) for m in range(P)}
    scores = losses(10)
    events = c.decide(10, scores)
    order = np.argsort(scores)
    assert sorted(e.target for e in events) == sorted(order[-2:].tolist())
    for e in events:
        assert e.source in order[:2] and e.reason == "truncation" and e.step == 10
        assert e.old == before[e.target] and c.member_hyperparams(e.target) == e.new
        assert e.target_score == scores[e.target] and e.source_score == scores[e.source]
        assert set(e.operations) == {"lr", "dropout"}
        assert e.new["weight_decay"] == before[e.source]["weight_decay"]
        assert c.last_exploit_step[e.target] == 10
        # The log line names what was explored, not the values every member shares.
        assert f"lr {e.new['lr']:.3g} ({e.operations['lr']})" in e.explored() and "dropout" in e.explored()
        assert "weight_decay" not in e.explored() and "warmup" not in e.explored()


def test_same_seed_and_step_give_the_same_decision_on_every_worker():
    workers = [controller(seed=5) for _ in range(3)]
    for step in (10, 20, 30):
        decisions = [[e.to_json() for e in w.decide(step, losses(step))] for w in workers]
        assert decisions[0] and decisions[0] == decisions[1] == decisions[2]
    other = controller(seed=6)
    assert [e.to_json() for s in (10, 20, 30) for e in other.decide(s, losses(s))] != decisions[0]


def test_global_rng_is_untouched():
    np.random.seed(0)
    expected = np.random.random()
    np.random.seed(0)
    controller().decide(10, losses(10))
    assert np.random.random() == expected


def test_nonfinite_member_is_replaced_at_once_even_in_burn_in():
    c = controller(burn_in=100)
    scores = losses(3)
    scores[5] = math.nan
    assert c.nonfinite_members(scores) == [5]
    events = c.decide(3, scores)
    assert [(e.target, e.reason, e.target_score) for e in events] == [(5, "nonfinite", None)]
    assert math.isfinite(scores[events[0].source])
    assert c.decide(10, losses(10)) == []  # burn-in holds back the regular rounds
    assert c.decide(100, losses(100))


def test_bytes_penalty_needs_ratios_and_changes_the_ranking():
    c = controller(bytes_penalty=1.0)
    with pytest.raises(ValueError, match="bytes_ratio_P"):
        c.decide(10, [1.0] * P)
    ratio = [0.0] * 6 + [1.0, 1.0]  # equal losses: the two heavy senders are the worst
    assert sorted(e.target for e in c.decide(10, [1.0] * P, bytes_ratio_P=ratio)) == [6, 7]


def test_events_are_json_lines_and_replay_rebuilds_every_schedule():
    c = controller(seed=2)
    initial = {k: list(v) for k, v in c.hyperparams.items()}
    log, truth = [], {}
    for step in range(1, 61):
        scores = losses(step)
        if step == 15:
            scores[0] = math.inf
        log += [e.to_json() for e in c.decide(step, scores)]
        truth[step] = {m: c.member_hyperparams(m) for m in range(P)}
    events = read_events(log)
    assert all(isinstance(e, Event) and e.to_json() == line for e, line in zip(events, log))
    assert any(e.reason == "nonfinite" and e.step == 15 for e in events)
    histories = replay(events, initial)
    for step, members in truth.items():
        for m, values in members.items():
            assert histories[m].at(step) == values
    assert histories[0].at(0) == {k: v[0] for k, v in initial.items()}
    assert (15, next(e.source for e in events if e.step == 15)) in histories[0].lineage
    assert sum(len(h.lineage) for h in histories) == len(events)
    with pytest.raises(ValueError, match="do not match"):
        replay(events, controller(seed=9).hyperparams)


def test_state_dict_round_trip_with_weights_only_load():
    c = controller()
    for step in (10, 20):
        c.decide(step, losses(step))
    buffer = io.BytesIO()
    torch.save(c.state_dict(), buffer)
    buffer.seek(0)
    resumed = controller()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert (resumed.hyperparams, resumed.last_exploit_step, resumed.initial) == \
        (c.hyperparams, c.last_exploit_step, c.initial)
    assert [e.to_json() for e in resumed.decide(30, losses(30))] == [e.to_json() for e in c.decide(30, losses(30))]
    with pytest.raises(ValueError, match="population or its mutations changed"):
        PBTController(config(), members=4, seed=0, defaults=DEFAULTS).load_state_dict(c.state_dict())
