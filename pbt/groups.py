"""A population of G groups × P members: global member ids and each group's share of a round.

Legend: G groups, P members per group, G·P members in all. Member `i` of group `g` has the
global id `g·P + i`; metrics, events and the global controller (a PBTController over G·P
members, run by one coordinator) speak global ids, a group's model and optimizer local ones.

Pure: the Ray side (launch/backends/groups.py) moves the state these plans ask for.
"""
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pbt.events import Event


@dataclass(frozen=True)
class GroupLayout:
    groups: int
    members: int  # P, per group

    @property
    def population(self) -> int:
        return self.groups * self.members

    def global_id(self, group: int, member: int) -> int:
        if not (0 <= group < self.groups and 0 <= member < self.members):
            raise ValueError(f"no member {member} in group {group} (layout: {self.groups} groups × {self.members})")
        return group * self.members + member

    def locate(self, global_id: int) -> tuple[int, int]:
        """(group, local member) of a global id."""
        if not 0 <= global_id < self.population:
            raise ValueError(f"no member {global_id} in a population of {self.population}")
        return divmod(global_id, self.members)

    def global_ids(self, group: int) -> list[int]:
        return [self.global_id(group, m) for m in range(self.members)]


@dataclass(frozen=True)
class GroupRound:
    """What one group does with a round's global events, in its own (local) member ids.
    Sources and targets of a round are disjoint, so exports may go first and every copy
    reads a state that the round does not change."""

    events: list[Event]  # the events whose target is in this group (global ids), to apply and log
    local_copies: list[tuple[int, int]]  # (target, source): both in this group
    imports: list[tuple[int, int]]  # (local target, global source in another group)
    exports: list[int]  # local members that another group copies, each once


def plan_group_round(events: Sequence[Event], layout: GroupLayout, group: int) -> GroupRound:
    mine, local_copies, imports, exports = [], [], [], []
    for event in events:
        target_group, target = layout.locate(event.target)
        source_group, source = layout.locate(event.source)
        if target_group == group:
            mine.append(event)
            if source_group == group:
                local_copies.append((target, source))
            else:
                imports.append((target, event.source))
        elif source_group == group and source not in exports:
            exports.append(source)
    return GroupRound(events=mine, local_copies=local_copies, imports=imports, exports=exports)


def group_controller_state(state: Mapping, layout: GroupLayout, group: int) -> dict:
    """The slice of a global PBTController.state_dict() that a group's HyperparamStore (P
    members) loads: its members' initial and current hyperparameters and exploit steps."""
    if state["members"] != layout.population:
        raise ValueError(f"controller state is for {state['members']} members, the layout has {layout.population}")
    lo, hi = group * layout.members, (group + 1) * layout.members
    return {"members": layout.members,
            "initial": {name: list(values[lo:hi]) for name, values in state["initial"].items()},
            "hyperparams": {name: list(values[lo:hi]) for name, values in state["hyperparams"].items()},
            "last_exploit_step": list(state["last_exploit_step"][lo:hi])}


def merged_controller_state(states: Sequence[Mapping], layout: GroupLayout) -> dict:
    """The global PBTController.state_dict() whose slices are `states` (group g's store
    state, in group order): the inverse of group_controller_state. A resumed run rebuilds
    its coordinator's decider this way from the groups' checkpoints, which hold the
    hyperparameters as the round at their step left them."""
    if len(states) != layout.groups or any(state["members"] != layout.members for state in states):
        raise ValueError(f"expected {layout.groups} group states of {layout.members} members each")
    names = states[0]["hyperparams"].keys()

    def joined(part: str) -> dict[str, list[float]]:
        return {name: [v for state in states for v in state[part][name]] for name in names}

    return {"members": layout.population, "initial": joined("initial"), "hyperparams": joined("hyperparams"),
            "last_exploit_step": [s for state in states for s in state["last_exploit_step"]]}
