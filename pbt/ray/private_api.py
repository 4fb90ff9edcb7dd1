"""Every use of Ray's private API in sparsepop, in one place, each where Ray has no public
one. A Ray upgrade that moves or changes any of it fails tests/unit/pbt/test_ray_private_api.py
loudly, instead of hanging a job at start-up or in the middle of a run.

Ray core and Ray Train (used by launch/backends): the address `ray.init("auto")` would join,
single-machine mode, leaving a local instance without its monitor's wait, Ray Train's logger
names, its preemption watcher and its torch backend.
Ray Tune's PBT (used by pbt/ray/tune_scheduler.py): the hooks of an exploit."""
import os
from collections.abc import Callable

# ---------------------------------------------------------------- Ray core and Ray Train


def last_recorded_cluster() -> str | None:
    """The address `ray.init(address="auto")` would join ("host:port") as Ray recorded it,
    or None when no cluster is recorded or running. Ray reads it from its temp dir's record
    of the last head started on this machine; there is no public call for it. Ray's own
    `canonicalize_bootstrap_address` would also rewrite 127.0.0.1 to the machine's interface
    address, where a loopback head (make quickstart's) does not listen."""
    from ray._private.services import get_ray_address_from_environment

    try:
        return get_ray_address_from_environment("auto", None)
    except ConnectionError:  # no cluster recorded and none running
        return None


def leave_ray() -> None:
    """`ray.shutdown()`, a second sooner for a local instance this process started. Ray
    stops the GCS before the autoscaler monitor, whose SIGTERM handler then reports to the
    stopped GCS until Ray gives up on it a second later and kills it. A local instance has
    nothing to autoscale and the monitor holds no state, so it is taken out of Ray's list
    and killed once Ray is left. A driver that joined a cluster started none of its
    processes (`all_processes` is empty). Only for a driver none of whose threads is still
    inside Ray: see ray_session.wind_down_interrupted."""
    import ray
    from ray._private import ray_constants, worker

    node = worker._global_node
    monitors = node.all_processes.pop(ray_constants.PROCESS_TYPE_MONITOR, []) if node is not None else []
    ray.shutdown()
    for monitor in monitors:
        monitor.process.kill()
        monitor.process.wait()


def quiet_ray_train_worker_logs() -> None:
    """Keep Ray Train's warnings in a worker, not its two INFO lines per worker per
    checkpoint ("Checkpoint successfully created", "Reporting training result"). One of
    the two modules names its logger by its file path, outside the `ray.train` tree."""
    import logging

    from ray.train.v2._internal.execution import context

    for name in ("ray.train", context.__file__):
        logging.getLogger(name).setLevel(logging.WARNING)


# Ray Train's preemption watcher (an actor that drains workers off nodes about to be
# preempted) makes Ray log an error-looking line at every start ("constructor arguments in
# the object store and max_restarts > 0"). A local instance has no node to preempt.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"

# How often Ray Train's controller polls its workers (2 s by default). It also notices the
# workers' start and end only at a poll: at 0.5 s a job ends about 2 s sooner.
HEALTH_CHECK_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


# Whether Ray allows nodes to join (see ray_on_loopback_only); "0" is single-machine mode.
CLUSTERS_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ray_on_loopback_only() -> None:
    """Ray's single-machine mode, for a local instance this process is about to start.

    Ray's gRPC servers (GCS, raylet, core workers, the dashboard agent's) listen on all
    interfaces unless the node's address is loopback, then on 127.0.0.1 (its agents listen
    on the node's address). On Linux, though, Ray turns a node address of 127.0.0.1 into the
    machine's interface address (`services.resolve_ip_for_localhost`), unless multi-node
    clusters are off, as they are by default on Windows and macOS (`CLUSTERS_ENV=0`): then
    the node is 127.0.0.1 and no other node can join. This process read the setting when it
    imported Ray, so it is changed here too; the variable reaches the processes Ray starts."""
    from ray._private import ray_constants

    os.environ[CLUSTERS_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def ray_train_torch_backend():
    """Ray Train's torch backend class and its function that sets a worker's RANK,
    LOCAL_RANK, ... before the process group starts: launch/backends/ray_rendezvous.py
    builds its own backend on them (Ray has no public way to bind the group's store)."""
    from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

    return _TorchBackend, _set_torch_distributed_env_vars


# ---------------------------------------------------------------- Ray Tune's PBT
# Ray has no public hook for an exploit, and none to keep a target's own `member` (Ray
# copies the donor's whole config).

# PopulationBasedTraining's private methods overridden below, with their parameters, and
# the private attributes read.
PRIVATE_HOOKS = {"_get_new_config": ("self", "trial", "trial_to_clone"),
                 "_exploit": ("self", "tune_controller", "trial", "trial_to_clone")}
PRIVATE_ATTRIBUTES = ("_trial_state", "_metric")  # _trial_state[trial].last_result: the trial's last result


def __getattr__(name: str):
    """`EventLoggingPBT` is built on first use: Ray Tune's scheduler module takes half a
    second to import, which the flavours without Tune do not pay at start-up."""
    if name == "EventLoggingPBT":
        globals()[name] = cls = _event_logging_pbt()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _event_logging_pbt() -> type:
    from ray.tune.schedulers import PopulationBasedTraining

    from pbt.events import Event, finite_or_none
    from pbt.tune_mapping import MEMBER_KEY, TIME_ATTR, trial_hyperparams

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

    # Named as a module attribute, so that pickle (Tune saves its scheduler) finds it by reference.
    EventLoggingPBT.__qualname__ = EventLoggingPBT.__name__
    return EventLoggingPBT
