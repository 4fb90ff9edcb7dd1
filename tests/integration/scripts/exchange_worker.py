"""One worker of the exchange integration tests; run 2 of them (gloo or mpiexec).

  python exchange_worker.py --backend torch --rank R --world-size 2 --port P --outdir D
  mpiexec -n 2 python exchange_worker.py --backend mpi --outdir D

For every case in CASES it runs GradientExchange for STEPS steps on gradients drawn
from a private generator seeded by (rank, step), and saves what a reference needs to
`D/rank{R}.pt`: the gradients fed in, this worker's payloads, the averaged result, the
byte report and the final error-feedback state. It also exercises the raw collectives
(empty tensors, bf16 sums, stacked all-gather, broadcast). The test recomputes every
expected average from the saved payloads with plain tensor ops (exchange_check.py).

Shape legend: P members (2 here), W workers.
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
STEPS = 4
# Uneven sizes on purpose, plus an empty parameter: every rank must still issue the
# same collectives in the same order. Names are unsorted on purpose too.
SHAPES = {
    "layer1.weight": (P, 16, 24),
    "layer1.bias": (P, 24),
    "embed.weight": (P, 50, 8),
    "empty.weight": (P, 0, 3),
    "head.scale": (P, 1),
}
CASES = {
    "dense": dict(method="none"),
    "dense_fp16": dict(method="none", value_dtype="fp16"),
    "topk": dict(method="topk", density=0.1),
    "topk_global_fp16": dict(method="topk", density=0.05, scope="global", value_dtype="fp16"),
    "topk_warmup_no_ef": dict(method="topk", density=0.1, warmup_steps=2, error_feedback=False),
    "randomk_shared": dict(method="randomk", density=0.1, randomk_mode="shared"),
    "randomk_shared_bf16": dict(method="randomk", density=0.1, value_dtype="bf16"),
    "randomk_independent": dict(method="randomk", density=0.1, randomk_mode="independent"),
    "topk_member_density": dict(method="topk", density=0.1),
    "randomk_shared_member_density": dict(method="randomk", density=0.1, randomk_mode="shared"),
    "randomk_independent_member_density": dict(method="randomk", density=0.1, randomk_mode="independent",
                                               value_dtype="fp16"),
}
# Cases where each member has its own density (PBT mutating it), as exchange(density_P=).
DENSITY_P = {
    "topk_member_density": [0.05, 0.3],
    "randomk_shared_member_density": [0.3, 0.05],
    "randomk_independent_member_density": [0.05, 0.3],
}


def make_grads(rank: int, step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * rank + step)
    return {name: torch.randn(shape, generator=gen) for name, shape in SHAPES.items()}


def run_cases(comm) -> dict:
    out = {}
    for case, kwargs in CASES.items():
        ex = GradientExchange(config=CompressionConfig(**kwargs), communicator=comm, seed=7)
        steps = []
        for step in range(STEPS):
            grads = make_grads(comm.rank, step)
            res = ex.exchange(grads, step=step, density_P=DENSITY_P.get(case))
            steps.append({
                "grads": grads,
                "result": res.grads,
                "payloads": {
                    bid: {
                        "values": p.values_K,
                        "idx": p.idx_K,
                        "shape": list(p.shape_PN),
                        "wire": "dense" if p.idx_K is None else "sparse" if p.indices_on_wire else "values_only",
                        "on_wire": p.indices_on_wire,
                        "k_P": list(p.k_P),
                        "nbytes_P": list(p.nbytes_P),
                    }
                    for bid, p in res.payloads.items()
                },
                "bytes": res.bytes.as_dict(),
            })
        out[case] = {"config": kwargs, "density_P": DENSITY_P.get(case), "steps": steps, "ef_state": ex.state_dict()}
    return out


def run_state_and_inplace(comm) -> dict:
    """A resumed exchange continues bit-identically; exchange_ writes what exchange returns."""
    cfg = CompressionConfig(method="topk", density=0.1)
    full = GradientExchange(config=cfg, communicator=comm, seed=7)
    results = [full.exchange(make_grads(comm.rank, t), step=t).grads for t in range(4)]
    first = GradientExchange(config=cfg, communicator=comm, seed=7)
    for t in range(2):
        first.exchange(make_grads(comm.rank, t), step=t)
    resumed = GradientExchange(config=cfg, communicator=comm, seed=7)
    resumed.load_state_dict(first.state_dict())
    resume_equal = True
    for t in (2, 3):
        grads = make_grads(comm.rank, t)
        resumed.exchange_(grads, step=t)  # in place
        resume_equal &= all(torch.equal(grads[n], results[t][n]) for n in grads)
    full.copy_member_(0, 1)
    copied = all(torch.equal(r[0], r[1]) for r in full.state_dict().values())
    return {"resume_equal": resume_equal, "copy_member": copied}


def run_collectives(comm) -> dict:
    r = comm.rank
    x = torch.full((3, 2), float(r + 1))
    gathered = comm.all_gather(x)
    # Several pieces for gloo (distrib/communicators.py), the last one short.
    big = torch.arange(700_000, dtype=torch.int32) * (r + 1)
    big_gathered = comm.all_gather(big)
    bf = torch.full((4,), 1.5 * (r + 1), dtype=torch.bfloat16)
    comm.all_reduce_sum_(bf)
    empty = torch.empty(0)
    comm.all_reduce_sum_(empty)
    empty_gather = comm.all_gather(torch.empty(2, 0))
    b = torch.arange(5, dtype=torch.int32) * (r + 1)
    comm.broadcast_(b, src=1)
    comm.barrier()
    return {"gathered": gathered, "big_gathered": big_gathered, "bf16_sum": bf, "empty_gather_shape": list(empty_gather.shape),
            "broadcast": b}


def run(comm) -> dict:
    return {"rank": comm.rank, "world_size": comm.world_size,
            "cases": run_cases(comm), "collectives": run_collectives(comm),
            "state": run_state_and_inplace(comm)}


if __name__ == "__main__":
    rank_main(run)
