"""Every use of Ray's private PBT API, in one place: a Ray upgrade that changes any of it
fails tests/unit/pbt/test_ray_private_api.py, which checks PRIVATE_HOOKS against the installed
Ray. Ray has no public hook for an exploit, and none to keep a target's own `member` (Ray
copies the donor's whole config)."""
from collections.abc import Callable

from ray.tune.schedulers import PopulationBasedTraining

from pbt.events import Event, finite_or_none
from pbt.tune_mapping import MEMBER_KEY, TIME_ATTR, trial_hyperparams

# PopulationBasedTraining's private methods overridden below, with their parameters, and
# the private attributes read.
PRIVATE_HOOKS = {"_get_new_config": ("self", "trial", "trial_to_clone"),
                 "_exploit": ("self", "tune_controller", "trial", "trial_to_clone")}
PRIVATE_ATTRIBUTES = ("_trial_state", "_metric")  # _trial_state[trial].last_result: the trial's last result


class EventLoggingPBT(PopulationBasedTraining):
    """Hands every exploit to `on_event`. The hooks are Ray's own steps of an exploit:
    `_get_new_config` (explore the donor's config) inside `_exploit` (clone)."""

    def __init__(self, *, on_event: Callable[[Event], None], **kwargs):
        super().__init__(**kwargs)
        self._on_event = on_event
        self._last_operations: dict = {}

    def _get_new_config(self, trial, trial_to_clone):
        new_config, operations = super()._get_new_config(trial, trial_to_clone)
        new_config[MEMBER_KEY] = trial.config[MEMBER_KEY]  # Ray copies the donor's whole config
        self._last_operations = operations
        return new_config, operations

    def _exploit(self, tune_controller, trial, trial_to_clone):
        old = trial_hyperparams(trial.config)
        target_result = self._trial_state[trial].last_result
        source_result = self._trial_state[trial_to_clone].last_result
        super()._exploit(tune_controller, trial, trial_to_clone)
        self._on_event(Event(
            # The target resumes from the donor's checkpoint: its new values rule from that step.
            step=int(source_result[TIME_ATTR]), target=trial.config[MEMBER_KEY],
            source=trial_to_clone.config[MEMBER_KEY], reason="truncation",
            target_score=finite_or_none(target_result[self._metric]),
            source_score=finite_or_none(source_result[self._metric]),
            old=old, new=trial_hyperparams(trial.config),
            operations={name: str(op) for name, op in self._last_operations.items()}))
