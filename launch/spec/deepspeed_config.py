"""The DeepSpeed config of a job, built in one pure function from the spec.

Key names are DeepSpeed's own. The user's `distributed.deepspeed` mapping is merged in;
the keys the spec owns were checked for agreement, and the merged config by DeepSpeed's
own config model (distrib/deepspeed_check.py), when the spec was validated.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the schema's rules check this config, so the schema imports this module
    from launch.spec.schema import JobSpec


def deepspeed_owned_keys(spec: JobSpec) -> dict[str, object]:
    """DeepSpeed keys the spec owns; a pass-through value must agree with the spec."""
    return {
        "train_micro_batch_size_per_gpu": spec.train.micro_batch_size,
        "gradient_accumulation_steps": spec.train.grad_accum_steps,
        # DeepSpeed's clip takes one norm over every member; train.grad_clip is applied
        # per member by the worker instead.
        "gradient_clipping": 0.0,
    }


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
