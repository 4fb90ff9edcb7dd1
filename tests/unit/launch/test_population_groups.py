"""Several groups: global member ids, each group's share of a round's global decisions, the
coordinator's barrier (plain asyncio, no Ray), and one member's full state moved into
another group's model."""
import asyncio

import pytest
import torch

from launch.spec.problems import SpecError
from launch.backends.coordinator import PopulationCoordinator
from launch.spec.schema import validate_tree
from pbt.config import PBTConfig
from pbt.controller import PBTController
from pbt.events import Event
from pbt.groups import GroupLayout, group_controller_state, plan_group_round
from tests.unit.trainers.test_member_copy import member_state, trained_group
from trainers.member_state import export_residual, export_shared, import_residual_, import_shared_


def test_global_ids_round_trip():
    layout = GroupLayout(groups=3, members=4)
    assert layout.population == 12
    assert [layout.global_id(g, m) for g in range(3) for m in range(4)] == list(range(12))
    assert all(layout.locate(layout.global_id(g, m)) == (g, m) for g in range(3) for m in range(4))
    assert layout.global_ids(2) == [8, 9, 10, 11]
    with pytest.raises(ValueError):
        layout.locate(12)
    with pytest.raises(ValueError):
        layout.global_id(0, 4)


def test_groups_are_a_ray_launcher_feature_and_pbt_may_span_groups_of_one():
    spec = validate_tree({"population": {"size": 1, "groups": 2, "pbt": {"hyperparam_mutations": {"lr": [1e-3, 1e-2]}}}})
    assert spec.population.groups == 2
    with pytest.raises(SpecError) as err:
        validate_tree({"population": {"size": 2, "groups": 2}, "distributed": {"launcher": "mpi"}})
    assert [problem.path for problem in err.value.problems] == ["population.groups"]


def event(target, source, step=10):
    return Event(step=step, target=target, source=source, reason="truncation", target_score=3.0,
                 source_score=1.0, old={"lr": 1.0}, new={"lr": 2.0})


def test_round_is_split_into_copies_imports_and_exports_per_group():
    layout = GroupLayout(groups=3, members=2)  # group 0: 0 1, group 1: 2 3, group 2: 4 5
    events = [event(0, 1), event(2, 5), event(3, 5), event(4, 1)]
    g0, g1, g2 = (plan_group_round(events, layout, g) for g in range(3))
    assert g0.events == [events[0]] and g0.local_copies == [(0, 1)] and g0.imports == []
    assert g0.exports == [1]  # group 2 copies member 1
    assert g1.events == events[1:3] and g1.local_copies == [] and g1.imports == [(0, 5), (1, 5)]
    assert g1.exports == []
    assert g2.events == [events[3]] and g2.imports == [(0, 1)]
    assert g2.exports == [1]  # member 5, wanted twice by group 1, is exported once


def test_global_decisions_reach_every_group_and_slices_match_the_global_controller():
    layout = GroupLayout(groups=2, members=2)
    config = PBTConfig(perturbation_interval=10, quantile_fraction=0.5,
                       hyperparam_mutations={"lr": {"loguniform": [1e-4, 1e-2]}})
    controller = PBTController(config, members=layout.population, seed=0, defaults={"lr": 1e-3})
    # Group 0 is best, group 1 worst: both of group 1's members copy from group 0.
    events = controller.decide(10, [1.0, 1.5, 3.0, 2.5])
    assert sorted(e.target for e in events) == [2, 3] and {e.source for e in events} <= {0, 1}
    rounds = [plan_group_round(events, layout, g) for g in range(2)]
    assert sorted(rounds[0].exports) == sorted({e.source for e in events}) and not rounds[0].events
    assert sorted(t for t, _ in rounds[1].imports) == [0, 1]

    # A group's own controller, loaded with its slice, adopts the events by local index and
    # then agrees with the global controller on its members.
    state = controller.state_dict()
    local = PBTController(config, members=2, seed=0, defaults={"lr": 1e-3})
    local.load_state_dict(group_controller_state(PBTController(config, members=4, seed=0,
                                                               defaults={"lr": 1e-3}).state_dict(), layout, 1))
    for e in rounds[1].events:
        local.adopt(e, member=layout.locate(e.target)[1])
    assert local.hyperparams["lr"] == state["hyperparams"]["lr"][2:]
    assert local.last_exploit_step == [10, 10]
    assert group_controller_state(state, layout, 1)["initial"]["lr"] == state["initial"]["lr"][2:]



def test_member_state_moves_into_another_groups_model():
    donor = trained_group(0, [1e-3, 2e-3, 3e-3])
    target = trained_group(1, [4e-3, 5e-3, 6e-3])
    target[1].param_groups[0]["step_P"][1] = 7.0  # a different step count, to see it travel
    wanted = member_state(*donor, 2)
    others = [member_state(*target, m) for m in (0, 2)]
    assert not all(torch.equal(a, b) for a, b in zip(member_state(*target, 1), wanted))

    import_shared_(target[0], target[1], 1, export_shared(donor[0], donor[1], 2))
    import_residual_(target[2], 1, export_residual(donor[2], 2))

    got = member_state(*target, 1)
    assert len(got) == len(wanted) > 10 and all(torch.equal(a, b) for a, b in zip(got, wanted))
    assert all(torch.equal(a, b) for m, before in zip((0, 2), others)
               for a, b in zip(member_state(*target, m), before))
    # Hyperparameters are the controller's: the target keeps its own learning rate.
    assert float(target[1].param_groups[0]["lr_P"][1]) == float(torch.tensor(5e-3))


def coordinator(timeout_s=5.0):
    layout = GroupLayout(groups=2, members=2)
    config = PBTConfig(perturbation_interval=10, quantile_fraction=0.5,
                       hyperparam_mutations={"lr": {"loguniform": [1e-4, 1e-2]}})
    controller = PBTController(config, members=layout.population, seed=0, defaults={"lr": 1e-3})
    return PopulationCoordinator(controller, layout, timeout_s)


def report(c, step, group, scores):
    return c.decide(step, group, scores, [0.0, 0.0], [float(group), float(group) + 0.5])


def test_coordinator_decides_once_all_groups_reported_and_replays_from_memory():
    async def scenario():
        c = coordinator()
        first = asyncio.create_task(report(c, 10, 0, [1.0, 1.5]))
        await asyncio.sleep(0.01)
        assert not first.done()  # the barrier: group 1 has not reported yet
        events, digests = await report(c, 10, 1, [3.0, 2.5])
        assert await first == (events, digests) and digests == [0.0, 0.5, 1.0, 1.5]
        assert sorted(e.target for e in events) == [2, 3]
        # A group replaying the round after a restart gets the same answer at once.
        assert await report(c, 10, 1, [9.0, 9.0]) == (events, digests)
        # Two checkpoints of every group past it: the round is forgotten, a replay is an error.
        for step in (10, 20):
            for group in (0, 1):
                c.checkpoint(group, step)
        with pytest.raises(RuntimeError, match="forgotten"):
            await report(c, 10, 1, [3.0, 2.5])

    asyncio.run(scenario())


def test_coordinator_waits_are_bounded_and_a_failed_group_stops_the_others():
    async def scenario():
        with pytest.raises(TimeoutError, match=r"groups \[1\] to reach the PBT round at step 10"):
            await report(coordinator(timeout_s=0.05), 10, 0, [1.0, 1.5])
        c = coordinator()
        waiting = asyncio.create_task(report(c, 10, 0, [1.0, 1.5]))
        await asyncio.sleep(0.01)
        await c.fail(1, "WorkerGroupError: boom")
        with pytest.raises(RuntimeError, match="group 1: WorkerGroupError: boom"):
            await waiting

    asyncio.run(scenario())
