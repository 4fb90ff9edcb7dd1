"""From the spec to what a worker gets: the members' hyperparameters and the WorkerPlan
(no Ray here: the mpiexec launcher uses it too)."""
from launch.spec.schema import JobSpec
from pbt.controller import PBTController
from pbt.hyperparams import HyperparamStore
from trainers.loop import WorkerPlan
from trainers.rounds import NO_ROUNDS, LocalRounds


def population_controller(spec: JobSpec, members: int | None = None) -> HyperparamStore:
    """Members' hyperparameters: the spec's values, and PBT's draws for those it mutates
    (then the store is the PBTController that decides). `members`: default
    population.size (one group); the whole population's count for the coordinator of
    several groups."""
    defaults = {"lr": spec.train.lr, "weight_decay": spec.train.weight_decay,
                "warmup": spec.train.warmup_steps / spec.train.steps, "dropout": spec.model.dropout,
                "density": spec.compression.density}
    members = members or spec.population.size
    if spec.population.pbt is None:
        return HyperparamStore(members, defaults)
    return PBTController(spec.population.pbt, members=members, seed=spec.seed, defaults=defaults)


def worker_plan(spec: JobSpec, ds_config: dict) -> WorkerPlan:
    pbt = spec.population.pbt
    population = population_controller(spec)
    return WorkerPlan(seed=spec.seed, task=spec.task, model=spec.model, train=spec.train,
                      compression=spec.compression, members=spec.population.size, deepspeed_config=ds_config,
                      backend=spec.distributed.backend, checkpoint_interval=spec.run.checkpoint_interval,
                      use_gpu=spec.distributed.use_gpu, population=population,
                      rounds=LocalRounds(population) if pbt else NO_ROUNDS,
                      pbt_metric=pbt.metric if pbt else "val_loss")
