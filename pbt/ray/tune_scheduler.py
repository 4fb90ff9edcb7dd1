"""The spec's `population.pbt` as Ray Tune's `PopulationBasedTraining` and the trials'
search space (the rules behind the mapping: pbt/tune_mapping.py). Exploits are logged as
pbt.events.Event (our pbt_events.jsonl) beside Ray's own pbt_global.txt and
pbt_policy_*.txt."""
import functools
from collections.abc import Callable, Mapping

from ray import tune

from pbt.config import Mutation, PBTConfig
from pbt.events import Event
from pbt.ray.private_api import EventLoggingPBT
from pbt.tune_mapping import MEMBER_KEY, TIME_ATTR, clip_to_ranges


def tune_domain(mutation: Mutation):
    """Ray Tune's form of one mutation: tune.loguniform / tune.uniform for ranges, a plain
    list for a choice."""
    if mutation.kind == "choice":
        return list(mutation.values)
    low, high = mutation.values
    return tune.loguniform(low, high) if mutation.kind == "loguniform" else tune.uniform(low, high)


def scheduler_kwargs(pbt: PBTConfig) -> dict:
    """Keyword arguments of `PopulationBasedTraining` for the spec's pbt section."""
    mutations = dict(pbt.hyperparam_mutations)
    return {
        "time_attr": TIME_ATTR,
        "metric": pbt.metric,
        "mode": pbt.mode,
        "perturbation_interval": pbt.perturbation_interval,
        "burn_in_period": pbt.burn_in,
        "hyperparam_mutations": {name: tune_domain(m) for name, m in mutations.items()},
        "quantile_fraction": pbt.quantile_fraction,
        "resample_probability": pbt.resample_probability,
        "perturbation_factors": tuple(pbt.perturbation_factors),
        "custom_explore_fn": functools.partial(clip_to_ranges, mutations=mutations),
        "synch": pbt.synch,
    }


def build_scheduler(pbt: PBTConfig, *, on_event: Callable[[Event], None]) -> EventLoggingPBT:
    return EventLoggingPBT(on_event=on_event, **scheduler_kwargs(pbt))


def param_space(initial: Mapping[str, list[float]]) -> dict:
    """One trial per member: `member` is a grid over 0..P-1 and each hyperparameter is
    that member's initial value (initial: name -> [P], as HyperparamStore.initial)."""
    members = len(next(iter(initial.values())))
    space = {MEMBER_KEY: tune.grid_search(list(range(members)))}
    for name, values in initial.items():
        space[name] = tune.sample_from(lambda config, values=tuple(values): values[config[MEMBER_KEY]])
    return space
