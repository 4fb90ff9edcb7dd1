"""Ray's private names pbt/ray/private_api.py relies on still exist, with the parameters it
calls or overrides them with: a Ray upgrade that moves or changes them fails here, loudly,
not by hanging a job at start-up or in the middle of a run."""
import inspect
import os
import pickle

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from pbt.ray import private_api
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



def test_the_event_logging_scheduler_pickles_by_reference():
    # Tune saves its scheduler with the experiment: the lazily built class must be found by name.
    cls = private_api.EventLoggingPBT
    assert cls is private_api.EventLoggingPBT and issubclass(cls, PopulationBasedTraining)
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_canonicalize_bootstrap_address_is_where_we_call_it():
    from ray._private import services

    params = list(inspect.signature(services.canonicalize_bootstrap_address).parameters)
    assert params[0] == "addr", params


def test_last_recorded_cluster_answers_without_a_cluster(tmp_path, monkeypatch):
    # A temp dir Ray never wrote to: no cluster is recorded.
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    address = private_api.last_recorded_cluster()
    assert address is None or (isinstance(address, str) and ":" in address)


def test_the_logger_names_we_quiet_exist():
    import logging

    from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE, HEALTH_CHECK_INTERVAL_S_ENV_VAR
    from ray.train.v2._internal.execution import context, storage

    assert storage.logger.name.startswith("ray.train")  # quieted through the `ray.train` tree
    assert context.logger.name == context.__file__
    assert private_api.PREEMPTION_WATCHER_ENV in ENV_VARS_TO_PROPAGATE  # reaches Ray Train's controller
    assert private_api.HEALTH_CHECK_INTERVAL_ENV == HEALTH_CHECK_INTERVAL_S_ENV_VAR
    assert HEALTH_CHECK_INTERVAL_S_ENV_VAR in ENV_VARS_TO_PROPAGATE
    private_api.quiet_ray_train_worker_logs()
    assert not context.logger.isEnabledFor(logging.INFO) and not storage.logger.isEnabledFor(logging.INFO)


def test_single_machine_mode_keeps_the_node_address_on_loopback(monkeypatch):
    from ray._private import ray_constants, services

    assert private_api.CLUSTERS_ENV == ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    # Both are put back after the test.
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.setenv(private_api.CLUSTERS_ENV, "1")
    assert services.resolve_ip_for_localhost("127.0.0.1") != "127.0.0.1"  # Ray's default on Linux
    private_api.ray_on_loopback_only()
    assert os.environ[private_api.CLUSTERS_ENV] == "0"  # for the processes Ray starts
    assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"


def test_the_torch_backend_our_rendezvous_builds_on():
    from ray.train.torch import TorchConfig
    from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup

    from launch.backends.ray_rendezvous import BoundRendezvousBackend, BoundTorchConfig

    backend_cls, set_env_vars = private_api.ray_train_torch_backend()
    assert TorchConfig().backend_cls is backend_cls
    assert list(inspect.signature(backend_cls.on_start).parameters) == ["self", "worker_group", "backend_config"]
    assert list(inspect.signature(set_env_vars).parameters) == []
    assert BoundTorchConfig(backend="gloo").backend_cls is BoundRendezvousBackend
    assert issubclass(BoundRendezvousBackend, backend_cls)
    for method in ("execute", "execute_single", "execute_single_async", "__len__"):  # what on_start calls
        assert callable(getattr(WorkerGroup, method)), method


def test_leave_ray_kills_a_local_instances_monitor_and_shuts_down():
    import ray
    from ray._private import ray_constants, worker

    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        monitors = worker._global_node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])
        assert len(monitors) == 1 and monitors[0].process.poll() is None, "a local instance no longer starts a monitor"
        private_api.leave_ray()
        assert monitors[0].process.poll() is not None
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
