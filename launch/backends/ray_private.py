"""The Ray internals sparsepop relies on where Ray has no public API, in one place.
tests/unit/launch/test_ray_private.py fails loudly when a Ray upgrade changes them."""
import os


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
