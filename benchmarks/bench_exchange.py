"""The gradient exchange alone (`GradientExchange.exchange_`: error feedback, compression,
collective, averages into the gradients) on the gradient shapes of a spec's model, one
worker (gloo, world size 1), one thread: median wall and CPU time per step.

    .venv/bin/python benchmarks/bench_exchange.py                 # configs/netns_bench.yaml

CPU time (the process's own, gloo's threads included) stays readable when the machine is
shared and wall times are not; docs/cluster.md ("The exchange in place") compares two
versions of the code by running this under each, alternating.
"""
import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compression import CompressionConfig  # noqa: E402
from distrib.communicators import TorchCommunicator  # noqa: E402
from distrib.exchange import GradientExchange  # noqa: E402
from launch.spec.schema import load_spec  # noqa: E402
from trainers.model import PopulationTransformer  # noqa: E402

CASES = {"dense": {"method": "none"},
         "topk-fp16 0.01": {"method": "topk", "density": 0.01, "value_dtype": "fp16"},
         "randomk-shared 0.01": {"method": "randomk", "density": 0.01}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="configs/netns_bench.yaml")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the medians")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_spec(args.spec, ["distributed.num_workers=1", "distributed.resources_per_worker={CPU: 1}"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    model = PopulationTransformer(spec.model, members=spec.population.size, vocab_size=256,
                                  max_seq_len=spec.task.seq_len, causal=True)
    gen = torch.Generator().manual_seed(0)
    grads = {name: torch.randn(p.shape, generator=gen) for name, p in model.named_parameters()}
    del model
    print(f"{args.spec}: {sum(g.numel() for g in grads.values()):,} coordinates; "
          f"median of {args.steps - args.skip} steps, one worker, one thread")
    for name, config in CASES.items():
        exchange = GradientExchange(config=CompressionConfig(**config), communicator=TorchCommunicator())
        wall, cpu = [], []
        for step in range(args.steps):
            step_grads = {n: g.clone() for n, g in grads.items()}  # fresh local gradients each step
            wall_0, cpu_0 = time.perf_counter(), time.process_time()
            exchange.exchange_(step_grads, step=step)
            wall.append(time.perf_counter() - wall_0)
            cpu.append(time.process_time() - cpu_0)
        print(f"  {name:<20} wall {statistics.median(wall[args.skip:]) * 1e3:7.1f} ms   "
              f"cpu {statistics.median(cpu[args.skip:]) * 1e3:7.1f} ms", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
