"""Where one training step's time goes, on one worker with no network: forward + backward,
the gradient exchange (error feedback and compression; no collective crosses a link with
one worker), per-member gradient clipping, and the optimizer step.

    .venv/bin/python benchmarks/bench_step_phases.py                         # configs/netns_bench.yaml
    .venv/bin/python benchmarks/bench_step_phases.py --set task.seq_len=32 \\
        --set compression.method=topk --set compression.value_dtype=fp16

It runs the worker loop's own pieces (trainers/loop.py: the DeepSpeed engine, the exchange,
the clip, `engine.step()`) in this process with torch.distributed of world size 1 over
loopback, one thread (a Ray worker with CPU: 1 gets OMP_NUM_THREADS=1). Figures are medians
of the timed steps. What does not scale with tokens (exchange, clip, optimizer) bounds what
compression can gain on a link: see docs/cluster.md.
"""
import argparse
import contextlib
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distrib.deepspeed_glue import exchange_gradients  # noqa: E402
from launch.cli import report_spec_error  # noqa: E402
from launch.deepspeed_config import build_deepspeed_config  # noqa: E402
from launch.errors import SpecError  # noqa: E402
from launch.job import worker_plan  # noqa: E402
from launch.spec import load_spec  # noqa: E402
from trainers.loop import Worker, import_deepspeed  # noqa: E402
from trainers.model import member_losses  # noqa: E402
from trainers.population_optim import clip_grad_norm_per_member_  # noqa: E402

PHASES = ("forward+backward", "exchange", "clip", "optimizer", "step")


class NoReports:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class NoCheckpoints:
    def save(self, step, write_files):
        pass

    @contextlib.contextmanager
    def latest(self):
        yield None


def one_process_worker(spec) -> Worker:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import_deepspeed(use_gpu=False).init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    return Worker(worker_plan(spec, build_deepspeed_config(spec)), rank=0, world_size=1, reporter=NoReports(),
                  checkpoints=NoCheckpoints())


def measure(worker: Worker, steps: int, skip: int) -> dict[str, float]:
    train = worker.plan.train
    times = {phase: [] for phase in PHASES}
    for step in range(steps):
        marks = [time.perf_counter()]
        batches = [worker.data.train_batch(rank=0, world_size=1, member=m, step=step,
                                           batch_size=train.micro_batch_size) for m in range(worker.plan.members)]
        inputs_PBT = torch.stack([b[0] for b in batches])
        targets_PB = torch.stack([b[1] for b in batches])
        worker.engine.backward(member_losses(worker.engine(inputs_PBT), targets_PB).sum())
        marks.append(time.perf_counter())
        exchange_gradients(worker.engine, worker.exchange, step=step,
                           density_P=worker._hyperparams("density").tolist())
        marks.append(time.perf_counter())
        if train.grad_clip > 0:
            clip_grad_norm_per_member_(worker.engine.module.parameters(), train.grad_clip)
        marks.append(time.perf_counter())
        worker.engine.step()
        marks.append(time.perf_counter())
        if step >= skip:
            for phase, start, stop in zip(PHASES, marks, marks[1:]):
                times[phase].append(stop - start)
            times["step"].append(marks[-1] - marks[0])
    return {phase: statistics.median(values) for phase, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="configs/netns_bench.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec overrides")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the medians")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        spec = load_spec(args.spec, ["distributed.num_workers=1", "distributed.resources_per_worker={CPU: 1}",
                                     "train.grad_accum_steps=1", *args.set])
    except SpecError as err:
        return report_spec_error(err, args.spec)
    seconds = measure(one_process_worker(spec), args.steps, args.skip)
    comp = spec.compression
    print(f"{spec.name}: seq_len {spec.task.seq_len}, micro-batch {spec.train.micro_batch_size}, "
          f"{spec.population.size} member(s), compression {comp.method} (density {comp.density}, "
          f"{comp.value_dtype} values); median of {args.steps - args.skip} steps, one thread")
    for phase in PHASES:
        print(f"  {phase:<17} {seconds[phase] * 1e3:7.1f} ms  {seconds[phase] / seconds['step']:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
