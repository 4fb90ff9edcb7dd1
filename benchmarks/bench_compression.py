"""Step time and bytes per step of the dense baseline model (configs/baseline_dense.yaml) on 2 workers, for each
compression method and density, with the compressor's own time as a share of the step.

    mpiexec -n 2 .venv/bin/python benchmarks/bench_compression.py [--steps 20] [--spec configs/baseline_dense.yaml]

Runs the real worker loop (DeepSpeed engine, gradient exchange over gloo) under mpiexec.
`compress` is the selection alone (error feedback + compressor over every bucket, no
communication), timed on the step's own accumulated gradients; `exchange` is the whole
exchange including the collective (the loop's "exchange" phase, `Worker.time_phase`). Figures are medians over the timed steps.
"""
import argparse
import contextlib
import statistics
import time

import torch

from compression import GradLayout

GRID = [("none", None, 1.0)] + [
    (method, mode, density)
    for density in (0.1, 0.01, 0.001)
    for method, mode in (("topk", None), ("randomk", "shared"), ("randomk", "independent"))
]


def time_compress(worker, grads) -> float:
    """Seconds to run error feedback + the compressor over one step's local gradients."""
    exchange = worker.exchange
    started = time.perf_counter()
    for bucket_id, grad_PN in GradLayout.from_grads(grads, exchange.config.scope).flatten(grads):
        acc_PN = exchange.error_feedback.compensate(bucket_id, grad_PN)
        exchange.compressor.compress(acc_PN, step=worker.step, tensor_id=bucket_id)
    return time.perf_counter() - started


def measure(spec, args, comm):
    from launch.spec.deepspeed_config import build_deepspeed_config
    from launch.backends.plan import worker_plan
    from trainers.loop import Worker

    worker = Worker(worker_plan(spec, build_deepspeed_config(spec)), rank=comm.rank, world_size=comm.size,
                    reporter=None, checkpoints=None)  # no run(): neither is used
    exchange_times, local_grads = [], {}

    @contextlib.contextmanager
    def time_exchange(phase: str):
        if phase != "exchange":
            yield
            return
        # The local gradients, before the exchange averages them (none: zeros, as it sends).
        local_grads.update({name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                            for name, p in worker.engine.module.named_parameters() if p.requires_grad})
        started = time.perf_counter()
        yield
        exchange_times.append(time.perf_counter() - started)

    worker.time_phase = time_exchange
    step_times, compress_times, report = [], [], None
    for i in range(args.warmup + args.steps):
        comm.Barrier()
        started = time.perf_counter()
        _, report = worker.train_step()
        elapsed = time.perf_counter() - started
        if i >= args.warmup:
            step_times.append(elapsed)
            compress_times.append(time_compress(worker, local_grads))
    median = statistics.median
    return median(step_times), median(exchange_times[args.warmup:]), median(compress_times), report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="configs/baseline_dense.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    from mpi4py import MPI

    from launch.backends.mpi import init_torch_distributed
    from launch.spec.schema import load_spec, validate_tree
    from trainers.loop import import_deepspeed

    comm = MPI.COMM_WORLD
    import_deepspeed(False)
    init_torch_distributed(comm, "gloo")
    base = load_spec(args.spec).model_dump(mode="json")
    torch.set_num_threads(1)  # two workers share two cores
    rows = []
    for method, mode, density in GRID:
        # Overlap off: `exchange` is the whole exchange, as the table says (not what backward left).
        tree = {**base, "compression": {"method": method, "density": density, "overlap": False,
                                        **({"randomk_mode": mode} if mode else {})}}
        step_s, exchange_s, compress_s, report = measure(validate_tree(tree), args, comm)
        label = method + (f"-{mode}" if mode else "")
        rows.append((label, density, step_s, exchange_s, compress_s, report))
    if comm.rank == 0:
        print(f"\nbaseline model, {comm.size} workers (mpiexec + gloo), median of {args.steps} steps\n")
        print(f"{'method':<20}{'density':>8}{'step ms':>10}{'exchange ms':>13}{'compress ms':>13}"
              f"{'compress/step':>15}{'bytes/step':>13}{'of dense':>10}")
        for label, density, step_s, exchange_s, compress_s, report in rows:
            print(f"{label:<20}{density:>8g}{step_s * 1e3:>10.1f}{exchange_s * 1e3:>13.1f}{compress_s * 1e3:>13.2f}"
                  f"{compress_s / step_s:>15.1%}{report.bytes_sent:>13,}{report.ratio:>10.2%}")


if __name__ == "__main__":
    main()
