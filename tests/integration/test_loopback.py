"""Nothing of a job on one machine listens beyond it: every TCP listener of the job's
processes, sampled while it runs (as `ss -ltnp` would show them), is on 127.0.0.1. Ray
in single-machine mode binds its servers there, rank 0 binds the rendezvous store itself,
gloo uses `lo` (docs/scaling.md, "What listens where"). The quickstart's head is checked
in test_job_submit.py."""
import sys

from launch.backends.mpi_launcher import loopback_mpiexec
from tests.integration.conftest import REPO, launch_env
from tests.listeners import is_loopback, run_watching_listeners

SHORT = ("train.steps=4", "train.log_interval=2", "train.eval_interval=4", "run.checkpoint_interval=4")


def beyond_the_machine(seen) -> list:
    return sorted(entry for entry in seen if not is_loopback(entry[0]))


def launch_args(tmp_path, *prefix: str, overrides=SHORT) -> list[str]:
    args = [*prefix, sys.executable, "-m", "launch", "run", "configs/tiny.yaml", "--set", f"run.storage={tmp_path}"]
    for item in overrides:
        args += ["--set", item]
    return args


def test_a_local_ray_run_listens_on_loopback_only(tmp_path):
    done, seen = run_watching_listeners(launch_args(tmp_path), cwd=REPO, env=launch_env(), timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert beyond_the_machine(seen) == []
    # The sampling saw the job's servers: Ray's GCS and raylet, and the workers' process group.
    commands = " ".join(command for *_, command in seen)
    assert "gcs_server" in commands and "raylet" in commands and "RayTrainWorker" in commands, seen


def test_an_mpiexec_run_on_one_machine_listens_on_loopback_only(tmp_path):
    # The recipe of docs/scaling.md, as `launch sweep` starts its trials: the fork-based process
    # manager (hydra's `mpiexec` keeps a control port on all interfaces), MPICH's UCX on `lo`.
    args, env = loopback_mpiexec(2, launch_args(tmp_path, overrides=(*SHORT, "distributed.launcher=mpi",
                                                                     "distributed.backend=mpi")), launch_env())
    done, seen = run_watching_listeners(args, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert beyond_the_machine(seen) == []
    assert len({pid for _, _, pid, _ in seen}) == 2, seen  # both ranks listen (store, gloo, MPI)
