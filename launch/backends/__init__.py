"""The job flavours, one module each (its driver and its worker adapter), and the one
place that picks a spec's flavour: `run_job`.

  mpi        distributed.launcher: mpi              ranks started by mpiexec; no Ray
  ray_train  one vectorized group on Ray Train      (ray_session: what the Ray flavours share)
  groups     population.groups > 1                  G Ray Train groups + the coordinator actor
  tune       population.backend: tune               Ray Tune's PBT across trials

Each flavour module is imported only when chosen: the mpiexec path never imports Ray.
"""
from pathlib import Path

from launch.spec.schema import JobSpec


def run_job(spec: JobSpec, *, resume: Path | None = None) -> Path | None:
    """Run a validated spec to completion; returns its run directory (None on mpiexec ranks
    other than 0). Raises SpecError on input the cluster cannot satisfy, before any work.
    `resume`: continue the run in that directory from its last checkpoint instead
    (launch/runs/resume.py checked `spec` against the run's own)."""
    if spec.distributed.launcher == "mpi":
        from launch.backends.mpi import run_mpi_job

        return run_mpi_job(spec, resume=resume)
    if spec.population.groups > 1:
        from launch.backends.groups import run_group_job

        return run_group_job(spec, resume=resume)
    if spec.population.backend == "tune":
        from launch.backends.tune import run_tune_job

        return run_tune_job(spec, resume=resume)
    from launch.backends.ray_train import run_ray_train_job

    return run_ray_train_job(spec, resume=resume)
