"""The Ray internals launch/backends/ray_private.py relies on: a Ray upgrade that moves or
changes them fails here, loudly, instead of hanging a job at start-up."""
import inspect

from launch.backends import ray_private


def test_canonicalize_bootstrap_address_is_where_we_call_it():
    from ray._private import services

    params = list(inspect.signature(services.canonicalize_bootstrap_address).parameters)
    assert params[0] == "addr", params


def test_last_recorded_cluster_answers_without_a_cluster(tmp_path, monkeypatch):
    # A temp dir Ray never wrote to: no cluster is recorded.
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    address = ray_private.last_recorded_cluster()
    assert address is None or (isinstance(address, str) and ":" in address)


def test_the_logger_names_we_quiet_exist():
    import logging

    from ray.train.v2._internal.execution import context, storage
    from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE

    assert storage.logger.name.startswith("ray.train")  # quieted through the `ray.train` tree
    assert context.logger.name == context.__file__
    assert ray_private.PREEMPTION_WATCHER_ENV in ENV_VARS_TO_PROPAGATE  # reaches Ray Train's controller
    ray_private.quiet_ray_train_worker_logs()
    assert not context.logger.isEnabledFor(logging.INFO) and not storage.logger.isEnabledFor(logging.INFO)
