"""One rank of tests/unit/distrib/test_overlap.py: run 2 of them on loopback gloo.

    python overlap_ranks.py --rank R --world-size 2 --port P --outdir D

For every case, two copies of one small population model (the same weights, the same
batches) take STEPS optimizer-free steps of ACCUM micro-steps each: one exchanges after
backward (`GradientExchange.exchange_`, as distrib/deepspeed_glue.py), the other during
backward (`OverlappedExchange`, buckets small enough that there are several). Saved per
case to `D/rank{R}.pt`: both copies' averaged gradients, residuals and byte reports per
step, and how many buckets had started before backward returned.

Shape legend: P members, B batch, D width.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root

from compression import CompressionConfig
from distrib.exchange import GradientExchange
from distrib.overlap import OverlappedExchange
from tests.rank_main import rank_main

P, B, D = 2, 3, 16
STEPS, ACCUM = 3, 2
CASES = {
    "dense": {"method": "none"},
    "dense_fp16": {"method": "none", "value_dtype": "fp16"},  # lossy: keeps a residual
    "topk_fp16_member_density": {"method": "topk", "density": 0.1, "value_dtype": "fp16"},
    "topk_warmup": {"method": "topk", "density": 0.2, "warmup_steps": 1},
    "randomk_shared": {"method": "randomk", "density": 0.1},
    "powersgd_warmup": {"method": "powersgd", "rank": 1, "warmup_steps": 1},  # w1, w2 factorized; the rest dense
    "powersgd_rank2": {"method": "powersgd", "rank": 2},
    "randomk_independent_bf16": {"method": "randomk", "density": 0.1, "randomk_mode": "independent", "value_dtype": "bf16"},
}
DENSITY_P = {"topk_fp16_member_density": [0.05, 0.3]}


class Tiny(torch.nn.Module):
    """Three population-batched layers, a parameter that never gets a gradient and an
    empty one: hooks fire for some parameters only, the rest must still be exchanged.
    (Registered first, `unused` is in the last bucket: a bucket waits for all its
    gradients, so one that never comes holds its bucket and those after it until
    `finish()`.)"""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)  # the same weights on every rank and copy
        self.unused = torch.nn.Parameter(torch.ones(P, 5))
        self.empty = torch.nn.Parameter(torch.zeros(P, 0))
        self.w1 = torch.nn.Parameter(torch.randn(P, D, 4 * D, generator=gen) / D ** 0.5)
        self.b1 = torch.nn.Parameter(torch.zeros(P, 1, 4 * D))
        self.w2 = torch.nn.Parameter(torch.randn(P, 4 * D, D, generator=gen) / D ** 0.5)
        self.head = torch.nn.Parameter(torch.randn(P, D, 1, generator=gen))

    def forward(self, x_PBD: torch.Tensor) -> torch.Tensor:
        h_PBF = torch.relu(torch.baddbmm(self.b1, x_PBD, self.w1))
        return torch.bmm(torch.bmm(h_PBF, self.w2), self.head).square().mean((1, 2))  # [P]


def batch(rank: int, step: int, micro: int) -> torch.Tensor:
    return torch.randn(P, B, D, generator=torch.Generator().manual_seed(100 * rank + 10 * step + micro))


def run_case(comm, config: dict, density_P: list[float] | None) -> dict:
    cfg = CompressionConfig(**config)
    after, during = Tiny(), Tiny()
    ex_after = GradientExchange(config=cfg, communicator=comm, seed=5)
    ex_during = GradientExchange(config=cfg, communicator=comm, seed=5)
    overlapped = OverlappedExchange(ex_during, during.named_parameters(), bucket_bytes=2048)
    out = {"buckets": len(overlapped.buckets), "steps": []}
    for step in range(STEPS):
        for model in (after, during):
            model.zero_grad(set_to_none=True)
        for micro in range(ACCUM):
            x = batch(comm.rank, step, micro)
            after(x).sum().backward()
            if micro == ACCUM - 1:
                overlapped.arm(step=step, density_P=density_P)
            during(x).sum().backward()
            started = len(overlapped._in_flight) if micro == ACCUM - 1 else None
        grads = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in after.named_parameters()}
        report_after = ex_after.exchange_(grads, step=step, density_P=density_P)
        report_during = overlapped.finish()
        out["steps"].append({
            "after": {n: g.clone() for n, g in grads.items()},
            "during": {n: p.grad.clone() for n, p in during.named_parameters()},
            "residuals_after": ex_after.state_dict(), "residuals_during": ex_during.state_dict(),
            "bytes_after": report_after.as_dict(), "bytes_during": report_during.as_dict(),
            "sent_after": _sent(ex_after), "sent_during": _sent(ex_during),
            "started_in_backward": started,
        })
    overlapped.remove()
    return out


def _sent(exchange: GradientExchange) -> dict:
    """The column indices the last step sent, per parameter (None: a dense payload)."""
    return {n: (p.idx_K.clone() if p.idx_K is not None else None) for n, p in exchange.last_payloads.items()}


if __name__ == "__main__":
    rank_main(lambda comm: {case: run_case(comm, config, DENSITY_P.get(case)) for case, config in CASES.items()})
