"""A job's DeepSpeed config, checked by DeepSpeed's own config model before anything starts.

`deepspeed.runtime.config.DeepSpeedConfig` parses every section with DeepSpeed's pydantic
models (zero_optimization, fp16, bf16, comms_logger, the monitors, ...) and runs its own
sanity checks. It needs no process group: without one (deepspeed.comm not initialized) it
takes the world to be one rank, so the check runs with train_batch_size = micro batch ×
accumulation steps (launch/spec/rules.py checks the batch rule with the real worker count).

DeepSpeed reads the top-level scalars below without any type check (`steps_per_print: "x"`
passes its model and fails in the workers, `wall_clock_breakdown: "yes"` fails with a bare
TypeError), so they are checked here against what DeepSpeed 0.19 does with them
(deepspeed/runtime/config.py, `get_scalar_param`).
"""
import logging
import math
import textwrap
from contextlib import contextmanager

from compression.spec_types import shorten

BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
COUNTS = (*BATCH_KEYS, "steps_per_print")  # whole numbers >= 1 (steps_per_print is a modulus)
NUMBERS = ("gradient_clipping", "gradient_predivide_factor")  # finite numbers >= 0
FLAGS = ("prescale_gradients", "disable_allgather", "dump_state", "disable_python_gc", "wall_clock_breakdown",
         "memory_breakdown", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer",
         "managed_gradient_accumulation", "dataloader_drop_last", "use_data_before_expert_parallelism")


def deepspeed_config_problems(config: dict) -> list[tuple[str, str]]:
    """(key path inside the DeepSpeed config, what is wrong) for everything DeepSpeed
    would refuse, or take and then fail on in the workers; empty if it is fine."""
    problems = [(key, message) for key in config if (message := _scalar_problem(key, config[key]))]
    bad = {key for key, _ in problems}
    rest = {key: value for key, value in config.items() if key not in bad}
    # One rank (no process group here): train_batch_size = micro batch x accumulation steps.
    micro, accum = rest.get("train_micro_batch_size_per_gpu", 1), rest.get("gradient_accumulation_steps", 1)
    one_rank = {**rest, "train_batch_size": micro * accum}
    refusal = _refusal(one_rank)
    if refusal is None:
        return problems
    # Name the section: each key alone beside the batch keys (every check is a few ms).
    batch = {key: one_rank[key] for key in BATCH_KEYS if key in one_rank}
    named = [(key, _describe(key, config[key], error)) for key in rest if key not in BATCH_KEYS
             if (error := _refusal({**batch, key: config[key]})) is not None]
    return problems + (named or [("", _describe("", config, refusal))])


def _scalar_problem(key: str, value) -> str | None:
    if key in FLAGS and not isinstance(value, bool):
        return f"DeepSpeed reads it as true or false, got {shorten(value)}"
    if key in COUNTS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        return f"DeepSpeed reads it as a whole number >= 1, got {shorten(value)}"
    if key in NUMBERS and (isinstance(value, bool) or not isinstance(value, int | float)
                           or not math.isfinite(value) or value < 0):
        return f"DeepSpeed reads it as a finite number >= 0, got {shorten(value)}"
    return None


def _refusal(config: dict) -> Exception | None:
    """DeepSpeed's own verdict on `config`: the exception it raises, or None."""
    with _quiet():
        from deepspeed.runtime.config import DeepSpeedConfig

        try:
            DeepSpeedConfig(config)
        except Exception as error:  # noqa: BLE001 - any refusal is the user's to fix, reported with its words
            return error
    return None


@contextmanager
def _quiet():
    """DeepSpeed logs to stdout (its accelerator choice on import, its config on parsing);
    `launch validate` prints the resolved spec there."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(before)


def _describe(key: str, value, error: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        parts = []
        for item in error.errors():
            loc = [str(part) for part in item["loc"]]
            where = ".".join(loc[1:] if loc[:1] == [key] else loc)
            what = "unknown option" if item["type"] == "extra_forbidden" else item["msg"]
            parts.append(f"{where + ': ' if where else ''}{what} (got {shorten(item['input'])})")
        return "DeepSpeed refuses it: " + "; ".join(parts)
    if isinstance(error, TypeError) and "must be a mapping" in str(error):
        return (f"DeepSpeed reads {key} as a section, a mapping of its options ({key}: {{option: value, ...}}); "
                f"got {shorten(value)}")
    return f"DeepSpeed refuses it: {type(error).__name__}: {textwrap.shorten(str(error), 200, placeholder=' ...')}"

