"""What every rank script of the multi-process tests shares: its command line, its process
group and where it saves its results.

    python SCRIPT --rank R --world-size W --port P --outdir D [--backend torch]   (gloo, loopback)
    mpiexec -n W python SCRIPT --backend mpi --outdir D                            (MPI's world)

A script calls `rank_main(run)`: `run(communicator)` returns what the rank saves as
`D/rank{R}.pt` (tests/integration/conftest.py: `run_gloo_ranks`, `gloo_rank_results`).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import torch

from distrib.communicators import Communicator


def rank_main(run: Callable[[Communicator], dict]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["torch", "mpi"], default="torch")
    for name in ("--rank", "--world-size", "--port"):  # torch only: MPI knows them
        ap.add_argument(name, type=int)
    ap.add_argument("--outdir", required=True)
    args = ap.parse_args()
    if args.backend == "mpi":
        from distrib.communicators import MpiCommunicator

        comm = MpiCommunicator()
    else:
        import torch.distributed as dist

        from distrib.communicators import TorchCommunicator

        if None in (args.rank, args.world_size, args.port):
            ap.error("--backend torch needs --rank, --world-size and --port")
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank,
                                world_size=args.world_size)
        comm = TorchCommunicator()
    torch.save(run(comm), Path(args.outdir) / f"rank{comm.rank}.pt")
    if args.backend == "torch":
        dist.destroy_process_group()
