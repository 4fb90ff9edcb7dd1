"""The DeepSpeed config of a job, built in one pure function from the spec.

Key names are DeepSpeed's own. The user's `distributed.deepspeed` mapping is merged in;
the keys the spec owns were checked for agreement when the spec was validated.
"""
import copy

from launch.spec.rules import deepspeed_owned_keys
from launch.spec.schema import JobSpec


def build_deepspeed_config(spec: JobSpec) -> dict:
    train, world = spec.train, spec.distributed.num_workers
    config = {
        "train_batch_size": train.micro_batch_size * train.grad_accum_steps * world,
        **deepspeed_owned_keys(spec),
        "zero_optimization": {"stage": 0},
        # Progress is logged by sparsepop; DeepSpeed's own per-step prints would drown it.
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    return _deep_merge(config, spec.distributed.deepspeed)


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
