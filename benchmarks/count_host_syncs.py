"""Count the calls on a training step's path that would make the host wait for a GPU.

    .venv/bin/python benchmarks/count_host_syncs.py [--spec configs/quickstart.yaml] [--set KEY=VALUE ...]

A CUDA-free proxy for `torch.cuda.set_sync_debug_mode`: on CPU nothing waits, so this
counts, per step, the calls that read a tensor's values on the host (`.item()`,
`.tolist()`, `.cpu()`, `.numpy()`, `float()`/`int()`/`bool()` of a tensor, `nonzero`,
`unique`: their output size or value must come back) and the `.to(device)` copies (a
host-to-device copy from pageable memory waits for the stream). It runs the worker
loop's own step in this process (world size 1, as benchmarks/bench_step_phases.py):
`Worker.train_step()`, then what `Worker.run()` does after every step that is neither
logged, evaluated nor checkpointed (the loss averaged over workers, kept for the log
window, the plan's rounds). Some calls read tensors that live on the host on a GPU as
well (hyperparameters, byte counts): the listing names each call site so a reader can
tell them apart; the docs/gpu.md table says which are which.
"""
import argparse
import collections
import sys
import traceback
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_step_phases import one_process_worker

from compression.selection import BATCHED_DEVICE_TYPES
from launch.cli import report_spec_error
from launch.spec.problems import SpecError
from launch.spec.schema import load_spec
from trainers.loop import untimed

REPO = Path(__file__).resolve().parents[1]
READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__bool__,
         torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.nonzero, torch.nonzero,
         torch.Tensor.unique, torch.unique}
SIZED_BY_A_TENSOR = {torch.Tensor.repeat_interleave, torch.repeat_interleave}  # tensor repeats, no output_size
COPIES = {torch.Tensor.to, torch.tensor, torch.as_tensor}  # naming a device, blocking
NON_BLOCKING = "compression/transfer.py"  # to_device: blocking only where no GPU is (its CPU branch)


class CountSyncs(TorchFunctionMode):
    """Counts READS and device-naming COPIES by the first call site in this repository."""

    def __init__(self):
        super().__init__()
        self.sites: collections.Counter = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in READS or (func in COPIES and _blocking_copy(func, args, kwargs)) or (
                func in SIZED_BY_A_TENSOR and "output_size" not in kwargs
                and isinstance(kwargs.get("repeats", args[1] if len(args) > 1 else None), torch.Tensor)):
            site = _call_site()
            if not site.startswith(NON_BLOCKING):
                self.sites[(func.__name__, site)] += 1
        return func(*args, **kwargs)


def _blocking_copy(func, args, kwargs) -> bool:
    """A copy to a named device that waits: `.to(device)` without non_blocking=True, or a
    factory given data and a device (it copies from pageable host memory, blocking)."""
    if kwargs.get("non_blocking"):
        return False
    rest = args[1:] if func is torch.Tensor.to else ()
    return kwargs.get("device") is not None or any(isinstance(a, (torch.device, str)) for a in rest)


def _call_site() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = Path(frame.filename)
        if REPO in path.parents and "benchmarks" not in path.parts:
            return f"{path.relative_to(REPO)}:{frame.lineno}"
    return "?"


def count(spec, steps: int) -> collections.Counter:
    worker = one_process_worker(spec, untimed)
    for _ in range(2):  # warm-up: first-step allocations and lazy state
        worker.train_step()
    mode = CountSyncs()
    with mode:
        for _ in range(steps):
            loss_P, report = worker.train_step()
            loss_P = worker._mean_across_workers(loss_P)
            worker.window_losses.append(loss_P)
            worker.plan.rounds.after_step(worker, loss_P, report)
    return mode.sites


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="configs/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec overrides")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batched-selection", action="store_true",
                        help="top-k candidates gathered as on CUDA (compression/selection.py)")
    args = parser.parse_args()
    if args.batched_selection:
        BATCHED_DEVICE_TYPES.add("cpu")
    torch.set_num_threads(1)
    try:
        spec = load_spec(args.spec, ["distributed.num_workers=1", "distributed.resources_per_worker={CPU: 1}",
                                     "train.grad_accum_steps=1", *args.set])
    except SpecError as err:
        return report_spec_error(err, args.spec)
    sites = count(spec, args.steps)
    total = sum(sites.values()) / args.steps
    extra = " --batched-selection" if args.batched_selection else ""
    print(f"{spec.name} ({' '.join(args.set) or 'as written'}{extra}): {total:g} per step")
    for (name, site), n in sorted(sites.items(), key=lambda item: item[0][1]):
        print(f"  {n / args.steps:6g}  {name:<18} {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
