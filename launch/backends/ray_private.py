"""The Ray internals sparsepop relies on where Ray has no public API, in one place.
tests/unit/launch/test_ray_private.py fails loudly when a Ray upgrade changes them."""


def last_recorded_cluster() -> str | None:
    """The address `ray.init(address="auto")` would join ("host:port"), or None when no
    cluster is recorded or running. Ray resolves "auto" from its temp dir's record of the
    last head started on this machine; there is no public call for it."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address("auto")
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
