"""Exploit/explore events: one JSON line each in `pbt_events.jsonl`, and their replay.

An event at `step` (optimizer steps completed) means: member `target` took member
`source`'s state (weights, optimizer moments, error-feedback residual, step counters)
and the hyperparameters `new`, which are in force from that step on. `old` is what
`target` had before. Scores are the penalized metric that was compared; a non-finite
score is written as null (strict JSON has no NaN).

Given each member's initial hyperparameters, the events are enough to rebuild every
member's hyperparameter schedule and lineage (`replay`), as Ray Tune's pbt_policy files.
"""
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Event:
    step: int
    target: int
    source: int
    reason: str  # truncation: a perturbation round; nonfinite: target's score was NaN/inf
    target_score: float | None
    source_score: float | None
    old: dict[str, float]
    new: dict[str, float]
    operations: dict[str, str] = field(default_factory=dict)  # name -> "* 1.2", "resample", "shift left", ...
    # population.groups > 1: weights fingerprints (trainers.loop.replica_digest) of the source
    # at the round and of the target right after its copy; equal when the copy was exact.
    digests: dict[str, float] | None = None

    def explored(self) -> str:
        """The hyperparameters the exploit explored, for a log line: "lr 0.00762 (* 1.2),
        weight_decay 0.0435 (resample)". The others are not mutated, so every member holds
        the same value (a dense run's density among them, which nothing reads)."""
        return ", ".join(f"{name} {self.new[name]:.3g} ({operation})"
                         for name, operation in self.operations.items()) or "no hyperparameter explored"

    def to_json(self) -> str:
        fields = asdict(self)
        if self.digests is None:
            del fields["digests"]  # a single group's log keeps its format
        return json.dumps(fields, allow_nan=False)


def finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class MemberHistory:
    """One member's hyperparameter schedule and the copies it received."""

    schedule: list[tuple[int, dict[str, float]]]  # (from step, hyperparameters in force from then)
    lineage: list[tuple[int, int]] = field(default_factory=list)  # (step, source member) per exploit

    def at(self, step: int) -> dict[str, float]:
        """Hyperparameters in force for the optimizer step taken after `step` completed steps."""
        current = self.schedule[0][1]
        for start, values in self.schedule:
            if start > step:
                break
            current = values
        return current


def replay(events: Iterable[Event], initial: Mapping[str, Sequence[float]], *, members: int | None = None,
           check: bool = True) -> list[MemberHistory]:
    """Each member's schedule and lineage from its initial hyperparameters (name -> [P])
    and the events in the order they were logged. Raises if an event's `old` does not
    match the replayed state (a log that does not belong to these initial values), unless
    `check` is False. `members`: P, where `initial` may be empty."""
    members = len(next(iter(initial.values()))) if members is None else members
    histories = [MemberHistory(schedule=[(0, {name: float(v[m]) for name, v in initial.items()})])
                 for m in range(members)]
    for event in events:
        history = histories[event.target]
        current = history.schedule[-1][1]
        if check and any(not math.isclose(current.get(k, math.nan), v, rel_tol=1e-9) for k, v in event.old.items()):
            raise ValueError(f"event at step {event.step} says member {event.target} had {event.old}, "
                             f"but the replay has {current}: events and initial values do not match")
        history.schedule.append((event.step, dict(event.new)))
        history.lineage.append((event.step, event.source))
    return histories


def read_events(lines: Iterable[str]) -> list[Event]:
    """Events from the lines of a pbt_events.jsonl file (blank lines skipped)."""
    return [Event(**json.loads(line)) for line in lines if line.strip()]
