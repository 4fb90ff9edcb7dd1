"""One worker of the PowerSGD exchange test (test_powersgd_gloo.py); run 2 of them.

  python powersgd_worker.py --rank R --world-size 2 --port P --outdir D

For each case in CASES it runs GradientExchange with method powersgd for STEPS steps on
gradients drawn from a generator seeded by (rank, step) and saves, per step, the inputs,
the averages, the byte report and the exchange's state to `D/rank{R}.pt`.

Shape legend: P members (2 here).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root

from compression import CompressionConfig  # noqa: E402
from distrib.exchange import GradientExchange  # noqa: E402
from tests.rank_main import rank_main  # noqa: E402

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


def run(comm) -> dict:
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
    return out


if __name__ == "__main__":
    rank_main(run)
