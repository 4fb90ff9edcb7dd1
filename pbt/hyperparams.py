"""Members' hyperparameters: [P] values per name (the names of pbt.config.DOMAINS), as the
worker loop reads them every step.

Legend: P members.

A store alone holds the spec's values when there is no PBT, and a group's slice of a larger
population (population.groups > 1: the coordinator decides, the group adopts). The PBT
controller (pbt/controller.py) is a store whose values it draws and changes itself.
"""
from collections.abc import Mapping, Sequence

import torch

from pbt.config import DOMAINS
from pbt.events import Event


class HyperparamStore:
    """`defaults`: one value for every member (names sorted); `per_member`: [P] values,
    which replace a default of the same name."""

    def __init__(self, members: int, defaults: Mapping[str, float] | None = None,
                 per_member: Mapping[str, Sequence[float]] | None = None):
        values = {**{name: [float(v)] * members for name, v in sorted((defaults or {}).items())},
                  **{name: [float(v) for v in vs] for name, vs in (per_member or {}).items()}}
        unknown = sorted(set(values) - set(DOMAINS))
        if unknown:
            raise ValueError(f"unknown hyperparameters {unknown}; valid names: {', '.join(DOMAINS)}")
        if any(len(vs) != members for vs in values.values()):
            raise ValueError(f"expected {members} values (one per member) of every hyperparameter")
        self.members = members
        self.initial: dict[str, list[float]] = values
        self.hyperparams: dict[str, list[float]] = {k: list(v) for k, v in values.items()}
        self.last_exploit_step: list[int] = [-1] * members  # -1: never exploited

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "HyperparamStore":
        store = cls(state["members"], per_member=state["initial"])
        store.load_state_dict(state)
        return store

    # ------------------------------------------------------------ queries

    def member_hyperparams(self, member: int) -> dict[str, float]:
        return {name: values[member] for name, values in self.hyperparams.items()}

    def hyperparams_tensor(self, name: str, *, dtype: torch.dtype = torch.float32,
                           device: torch.device | str | None = None) -> torch.Tensor:
        """Hyperparameter `name` of every member as a [P] tensor."""
        if name not in self.hyperparams:
            raise KeyError(f"no hyperparameter {name!r}: it is neither mutated nor in defaults "
                           f"(known: {', '.join(self.hyperparams)})")
        return torch.tensor(self.hyperparams[name], dtype=dtype, device=device)

    # ------------------------------------------------------------ changes

    def adopt(self, event: Event, *, member: int | None = None) -> None:
        """Give `member` (default: the event's target) the event's new hyperparameters. A
        group of a larger population (population.groups > 1) adopts the coordinator's
        decisions this way, with its own index of the global target."""
        member = event.target if member is None else member
        for name, value in event.new.items():
            self.hyperparams[name][member] = value
        self.last_exploit_step[member] = event.step

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Lists and ints only, so `torch.load(weights_only=True)` reads it back."""
        return {"members": self.members, "initial": {k: list(v) for k, v in self.initial.items()},
                "hyperparams": {k: list(v) for k, v in self.hyperparams.items()},
                "last_exploit_step": list(self.last_exploit_step)}

    def load_state_dict(self, state: Mapping) -> None:
        if state["members"] != self.members or set(state["hyperparams"]) != set(self.hyperparams):
            raise ValueError(f"hyperparameter state is for {state['members']} members and hyperparameters "
                             f"{sorted(state['hyperparams'])}, this store has {self.members} and "
                             f"{sorted(self.hyperparams)}: the population or its mutations changed")
        self.initial = {k: [float(x) for x in v] for k, v in state["initial"].items()}
        self.hyperparams = {k: [float(x) for x in v] for k, v in state["hyperparams"].items()}
        self.last_exploit_step = [int(s) for s in state["last_exploit_step"]]
