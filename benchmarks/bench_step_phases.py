"""Where one training step's time goes, on one worker with no network: forward + backward,
the gradient exchange (error feedback and compression; no collective crosses a link with
one worker), per-member gradient clipping, and the optimizer step; "batch" is the host's
building of every member's batch.

    .venv/bin/python benchmarks/bench_step_phases.py                         # configs/netns_bench.yaml
    .venv/bin/python benchmarks/bench_step_phases.py --set task.seq_len=32 \\
        --set compression.method=topk --set compression.value_dtype=fp16

It runs the worker loop's own step (trainers/loop.py `Worker.train_step`: the DeepSpeed
engine, the exchange, the clip, `engine.step()`, timed through its `time_phase` hook) in this process with torch.distributed of world size 1 over
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

from launch.cli import report_spec_error  # noqa: E402
from launch.spec.deepspeed_config import build_deepspeed_config  # noqa: E402
from launch.spec.problems import SpecError  # noqa: E402
from launch.backends.plan import worker_plan  # noqa: E402
from launch.spec.schema import load_spec  # noqa: E402
from trainers.loop import Worker, import_deepspeed  # noqa: E402

PHASES = ("batch", "forward+backward", "exchange", "clip", "optimizer", "step")


def init_one_process_group(use_gpu: bool) -> None:
    """torch.distributed of world size 1 on loopback (gloo, or NCCL with a GPU); once per process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import_deepspeed(use_gpu).init_distributed(dist_backend="nccl" if use_gpu else "gloo", auto_mpi_discovery=False)


def one_process_worker(spec, time_phase, *, reporter=None, checkpoints=None) -> Worker:
    """A Worker in this process (world size 1). Without a reporter and checkpoints it can
    only `train_step()`, as the benchmarks do; with them it can `run()`."""
    init_one_process_group(spec.distributed.use_gpu)
    return Worker(worker_plan(spec, build_deepspeed_config(spec)), rank=0, world_size=1, reporter=reporter,
                  checkpoints=checkpoints, time_phase=time_phase)


def measure(spec, steps: int, skip: int) -> dict[str, float]:
    """Medians of `Worker.train_step` and of the phases it times; forward + backward is the
    rest of the step. On a GPU every boundary synchronizes, so each phase gets its own
    kernels' time. Also the payload one worker sends per step ("bytes_sent", all members)
    and the dense gradient's bytes ("dense_bytes", all members), from the last step."""
    calls = {"batch": [], "exchange": [], "clip": [], "optimizer": []}
    sync = torch.cuda.synchronize if spec.distributed.use_gpu else (lambda: None)

    @contextlib.contextmanager
    def time_phase(phase: str):
        sync()
        started = time.perf_counter()
        yield
        sync()
        calls[phase].append(time.perf_counter() - started)

    worker = one_process_worker(spec, time_phase)
    totals = []
    for _ in range(steps):
        sync()
        started = time.perf_counter()
        _, report = worker.train_step()
        sync()
        totals.append(time.perf_counter() - started)
    for seconds in calls.values():  # grad_clip 0 skips the clip: count it as 0
        seconds.extend([0.0] * (steps - len(seconds)))
    times = {name: seconds[skip:] for name, seconds in calls.items()}
    times["step"] = totals[skip:]
    times["forward+backward"] = [total - sum(parts) for total, *parts in zip(times["step"], *(times[n] for n in calls))]
    return {**{phase: statistics.median(times[phase]) for phase in PHASES},
            "bytes_sent": float(sum(report.bytes_sent_P)), "dense_bytes": float(report.dense_bytes * report.members)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="configs/netns_bench.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec overrides")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the medians")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        # Overlap off unless --set says otherwise: during backward, the exchange's work would
        # be counted as forward + backward (benchmarks/bench_overlap.py compares the two).
        spec = load_spec(args.spec, ["distributed.num_workers=1", "distributed.resources_per_worker={CPU: 1}",
                                     "train.grad_accum_steps=1", "compression.overlap=false", *args.set])
    except SpecError as err:
        return report_spec_error(err, args.spec)
    seconds = measure(spec, args.steps, args.skip)
    comp = spec.compression
    print(f"{spec.name}: seq_len {spec.task.seq_len}, micro-batch {spec.train.micro_batch_size}, "
          f"{spec.population.size} member(s), compression {comp.method} (density {comp.density}, "
          f"{comp.value_dtype} values); median of {args.steps - args.skip} steps, one thread")
    for phase in PHASES:
        print(f"  {phase:<17} {seconds[phase] * 1e3:7.1f} ms  {seconds[phase] / seconds['step']:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
