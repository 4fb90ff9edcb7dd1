"""One worker of the PowerSGD exchange test (test_powersgd_gloo.py); run 2 of them.

  python powersgd_worker.py --rank R --world-size 2 --port P --outdir D

For each case in CASES it runs GradientExchange with method powersgd for STEPS steps on
gradients drawn from a generator seeded by (rank, step) and saves, per step, the inputs,
the averages, the byte report and the exchange's state to `D/rank{R}.pt`.

Shape legend: P members (2 here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root

from compression import CompressionConfig  # noqa: E402
from distrib.communicators import TorchCommunicator  # noqa: E402
from distrib.exchange import GradientExchange  # noqa: E402

P = 2
STEPS = 3
# Matrices, a 3-D weight (viewed as [12, 8]), a bias, an empty and a one-element parameter.
SHAPES = {
    "layer1.weight": (P, 16, 24),
    "layer1.bias": (P, 24),
    "conv.weight": (P, 12, 4, 2),
    "embed.weight": (P, 50, 8),
    "empty.weight": (P, 0, 3),
    "head.scale": (P, 1),
}
CASES = {
    # a dense warm-up step first, then rank 2 with error feedback
    "rank2": dict(method="powersgd", rank=2, warmup_steps=1),
    # every matrix at full rank (and factorized although that saves nothing): exact
    "full": dict(method="powersgd", rank=50, min_compression_rate=1e-3),
}


def make_grads(rank: int, step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * rank + step)
    return {name: torch.randn(shape, generator=gen) for name, shape in SHAPES.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--rank", "--world-size", "--port"):
        parser.add_argument(flag, type=int, required=True)
    parser.add_argument("--outdir", required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank,
                            world_size=args.world_size)
    comm = TorchCommunicator()
    out = {}
    for case, kwargs in CASES.items():
        exchange = GradientExchange(config=CompressionConfig(**kwargs), communicator=comm, seed=7)
        steps = []
        for step in range(STEPS):
            grads = make_grads(comm.rank, step)
            result = exchange.exchange(grads, step=step)
            steps.append({"grads": grads, "averaged": result.grads, "bytes": result.bytes.as_dict(),
                          "state": exchange.state_dict()})
        out[case] = steps
    torch.save(out, Path(args.outdir) / f"rank{comm.rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
