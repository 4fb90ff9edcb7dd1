"""The Ray internals launch/backends/ray_private.py relies on: a Ray upgrade that moves or
changes them fails here, loudly, instead of hanging a job at start-up."""
import inspect
import os

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


def test_single_machine_mode_keeps_the_node_address_on_loopback(monkeypatch):
    from ray._private import ray_constants, services

    assert ray_private.CLUSTERS_ENV == ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    # Both are put back after the test.
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.setenv(ray_private.CLUSTERS_ENV, "1")
    assert services.resolve_ip_for_localhost("127.0.0.1") != "127.0.0.1"  # Ray's default on Linux
    ray_private.ray_on_loopback_only()
    assert os.environ[ray_private.CLUSTERS_ENV] == "0"  # for the processes Ray starts
    assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"


def test_the_torch_backend_our_rendezvous_builds_on():
    from ray.train.torch import TorchConfig
    from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup

    from launch.backends.ray_rendezvous import BoundRendezvousBackend, BoundTorchConfig

    backend_cls, set_env_vars = ray_private.ray_train_torch_backend()
    assert TorchConfig().backend_cls is backend_cls
    assert list(inspect.signature(backend_cls.on_start).parameters) == ["self", "worker_group", "backend_config"]
    assert list(inspect.signature(set_env_vars).parameters) == []
    assert BoundTorchConfig(backend="gloo").backend_cls is BoundRendezvousBackend
    assert issubclass(BoundRendezvousBackend, backend_cls)
    for method in ("execute", "execute_single", "execute_single_async", "__len__"):  # what on_start calls
        assert callable(getattr(WorkerGroup, method)), method
