"""One vectorized group on Ray Train (`distributed.launcher: ray`, population.groups = 1,
population.backend: vectorized): a TorchTrainer of distributed.num_workers workers, each
running the worker loop with the recorder as its reporter and Ray Train's checkpoints.
Resumed, the TorchTrainer of the same name and storage finds Ray Train's own record of the
run's checkpoints (`checkpoints/checkpoint_manager_snapshot.json`) and restores the latest."""
from pathlib import Path

from launch.backends.plan import worker_plan
from launch.backends.ray_session import ActorReporter, RayRun, RayTrainCheckpoints, fit_error, ray_trainer, run_on_ray
from launch.spec.schema import JobSpec


def run_ray_train_job(spec: JobSpec, *, resume: Path | None = None) -> Path:
    def fit(run: RayRun) -> str | None:
        config = {"plan": worker_plan(spec, run.ds_config), "reporter": ActorReporter(run.recorder),
                  "checkpoints": RayTrainCheckpoints()}
        return fit_error(ray_trainer(spec, config, run_dir=run.run_dir), run.recorder)

    return run_on_ray(spec, fit, resume=resume)
