"""One rank of tests/unit/distrib/test_flat_collectives.py (2 ranks, gloo on loopback).

  python flat_collectives_worker.py --rank R --world-size 2 --port P --outdir D

Runs the same gathers and exchanges through two TorchCommunicators on one gloo group:
`flat=True` (NCCL's path: one all_gather_into_tensor) and `flat=False` (gloo's 1 MiB
pieces), counting the torch.distributed calls each makes, and saves both results to
`D/rank{R}.pt` for the test to compare.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository root

from compression import CompressionConfig
from distrib.communicators import TorchCommunicator
from distrib.exchange import GradientExchange
from tests.rank_main import rank_main

CALLS: Counter = Counter()
COLLECTIVES = ("all_gather", "all_gather_into_tensor", "all_gather_single", "all_reduce")


def count_calls() -> None:
    """Count every torch.distributed collective the communicators issue (the real ones run)."""
    for name in COLLECTIVES:
        real = getattr(dist, name, None)
        if real is None:
            continue

        def counted(*args, _real=real, _name=name, **kwargs):
            CALLS[_name] += 1
            return _real(*args, **kwargs)

        setattr(dist, name, counted)


P = 2
SHAPES = {"layer.weight": (P, 300, 1000), "layer.bias": (P, 1000), "head.weight": (P, 17, 33)}
CASES = {  # method -> config; top-k's rows of 300,000 take the sampled-threshold path
    "dense": {"method": "none"},
    "topk_fp16": {"method": "topk", "density": 0.01, "value_dtype": "fp16"},
    "randomk_independent": {"method": "randomk", "density": 0.01, "randomk_mode": "independent"},
    "powersgd": {"method": "powersgd", "rank": 2},
}


def grads(rank: int, step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 * rank + step)
    return {name: torch.randn(shape, generator=gen) for name, shape in SHAPES.items()}


def run_both(comm: TorchCommunicator) -> dict:
    r = comm.rank
    out = {"gathers": [comm.all_gather(torch.arange(700_001, dtype=torch.float32) * (r + 1)),  # 3 pieces
                       comm.all_gather(torch.full((1001,), 0.5 * (r + 1), dtype=torch.float16))],  # odd bytes
           "exchanges": {}, "calls": {}}
    for case, config in CASES.items():
        ex = GradientExchange(config=CompressionConfig(**config), communicator=comm, seed=3)
        averaged = []
        for step in range(2):
            CALLS.clear()
            averaged.append(ex.exchange(grads(r, step), step=step).grads)
            out["calls"][f"{case}/{step}"] = dict(CALLS)
        out["exchanges"][case] = averaged
    return out


def run(comm: TorchCommunicator) -> dict:
    """`comm` is gloo's default: the 1 MiB pieces."""
    count_calls()
    return {"flat": run_both(TorchCommunicator(flat=True)), "pieces": run_both(comm), "default_flat": comm.flat}


if __name__ == "__main__":
    rank_main(run)
