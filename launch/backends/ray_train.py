"""One vectorized group on Ray Train (`distributed.launcher: ray`, population.groups = 1,
population.backend: vectorized): a TorchTrainer of distributed.num_workers workers, each
running the worker loop with the recorder as its reporter and Ray Train's checkpoints."""
from pathlib import Path

from launch.backends.plan import worker_plan
from launch.backends.ray_session import ActorReporter, RayRun, RayTrainCheckpoints, fit_error, ray_trainer, run_on_ray
from launch.spec.schema import JobSpec
from trainers.loop import Worker


def run_ray_train_job(spec: JobSpec) -> Path:
    def fit(run: RayRun) -> str | None:
        config = {"plan": worker_plan(spec, run.ds_config), "recorder": run.recorder}
        return fit_error(ray_trainer(spec, ray_train_worker, config, run_dir=run.run_dir))

    return run_on_ray(spec, fit)


def ray_train_worker(config: dict) -> None:
    """Ray Train's `train_loop_per_worker`: `config = {"plan": WorkerPlan, "recorder": actor}`."""
    import ray.train

    context = ray.train.get_context()
    Worker(config["plan"], rank=context.get_world_rank(), world_size=context.get_world_size(),
           reporter=ActorReporter(config["recorder"]), checkpoints=RayTrainCheckpoints()).run()
