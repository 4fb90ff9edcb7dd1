"""Ray's private PBT names pbt/ray/private_api.py relies on still exist, with the parameters
it overrides them with: a Ray upgrade that changes them fails here, not in the middle of a
run."""
import inspect

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from pbt.ray.private_api import PRIVATE_ATTRIBUTES, PRIVATE_HOOKS


def test_pbt_private_hooks_keep_their_parameters():
    for name, parameters in PRIVATE_HOOKS.items():
        method = getattr(PopulationBasedTraining, name, None)
        assert method is not None, f"Ray's PopulationBasedTraining lost {name}: update pbt/ray/private_api.py"
        assert tuple(inspect.signature(method).parameters) == parameters, f"{name} changed its parameters"


def test_pbt_private_attributes_exist():
    scheduler = PopulationBasedTraining(time_attr="step", metric="loss", mode="min",
                                        hyperparam_mutations={"lr": [1e-3, 1e-2]})
    for name in PRIVATE_ATTRIBUTES:
        assert hasattr(scheduler, name), f"Ray's PopulationBasedTraining lost {name}: update pbt/ray/private_api.py"
    from ray.tune.schedulers.pbt import _PBTTrialState  # what _trial_state holds

    assert hasattr(_PBTTrialState(Trial("member_trial", config={}, stub=True)), "last_result")

