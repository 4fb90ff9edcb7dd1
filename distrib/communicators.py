"""Communicators: the few collectives the gradient exchange needs, over two backends.

  TorchCommunicator  torch.distributed (gloo on CPU, NCCL on GPU), optional process group
  MpiCommunicator    mpi4py (COMM_WORLD by default) on host numpy buffers, the way
                     DeepSpeed's compressed (1-bit) backend uses MPI; CUDA tensors are
                     staged through host memory

Contract (both):
  * every rank calls the same collectives, in the same order, on tensors of the same
    shape and dtype (the exchange guarantees this by sorting names);
  * empty tensors (numel 0) return at once without a collective on every rank alike,
    so they can never leave one rank waiting;
  * `all_gather(x)` of equal-shaped tensors returns one stacked tensor `[W, *x.shape]`
    in rank order;
  * `start_all_reduce_sum_` / `start_all_gather` start the same collectives without
    waiting (torch's `async_op=True`, MPI's `Iallreduce` / `Iallgather`) and return a
    `Pending` whose `wait()` gives what the blocking call returns: the gradient exchange
    overlaps them with the backward pass (distrib/overlap.py). The blocking calls are
    `start_...().wait()`, so both run the same code. A started collective counts in the
    order of collectives when it starts.

Shape legend: W = world size (workers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch

# dtypes MPI can sum natively in mpich through numpy (float16 maps to MPIX_C_FLOAT16).
# bfloat16 has no numpy dtype: it is gathered as raw bytes and summed locally in fp32.
_MPI_SUMMABLE = {torch.float16, torch.float32, torch.float64, torch.int32, torch.int64}


class Pending:
    """A collective in flight: `wait()` waits for its requests, then returns `finish()`
    (the result, copied back where it was staged). `buffers` are kept alive until then
    (MPI writes into a numpy view of host memory that nothing else may hold)."""

    def __init__(self, waits: Sequence[Callable[[], object]], finish: Callable[[], torch.Tensor],
                 buffers: Sequence[torch.Tensor] = ()) -> None:
        self._waits, self._finish, self._buffers = waits, finish, buffers

    def wait(self) -> torch.Tensor:
        for wait in self._waits:
            wait()
        return self._finish()


class Communicator(ABC):
    """rank / world_size and in-place sum, stacked all-gather (blocking or started),
    broadcast, barrier."""

    rank: int
    world_size: int

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over all ranks, in place; returns `tensor`."""
        return self.start_all_reduce_sum_(tensor).wait()

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """`[W, *tensor.shape]`: every rank's tensor, in rank order."""
        return self.start_all_gather(tensor).wait()

    @abstractmethod
    def start_all_reduce_sum_(self, tensor: torch.Tensor) -> Pending:
        """Start `all_reduce_sum_`; `tensor` holds the sum once `wait()` returned (it)."""

    @abstractmethod
    def start_all_gather(self, tensor: torch.Tensor) -> Pending:
        """Start `all_gather`; `wait()` returns the `[W, *tensor.shape]` result."""

    @abstractmethod
    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite `tensor` with rank `src`'s, in place; returns `tensor`."""

    @abstractmethod
    def barrier(self) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


# gloo's all-gather of one large buffer runs 1.6-1.9x slower than the ring model over a
# shaped link (W = 2, 20 MB at 100 Mbit/s and 1 Gbit/s: its sends and receives barely
# overlap), while its all-reduce of the same bytes comes within 3-10%. Cut into 1 MiB pieces
# issued at once, which gloo's worker threads run side by side, the all-gather comes within
# 6-12% (docs/cluster.md, "The sparse all-gather").
GLOO_GATHER_PIECE_BYTES = 1 << 20


class TorchCommunicator(Communicator):
    """torch.distributed collectives on `group` (the default group when None).

    The process group must already be initialised (Ray Train, `deepspeed.init_distributed`
    or `torch.distributed.init_process_group`). Tensors must live where the backend wants
    them (CPU for gloo, CUDA for NCCL); gloo is given CPU copies of CUDA tensors.

    `flat`: all-gather in ONE `all_gather_into_tensor` into one buffer (what NCCL wants),
    instead of gloo's 1 MiB pieces. Default: flat unless the backend is gloo; a test on
    gloo forces it to check that both paths give the same result.
    """

    def __init__(self, group=None, *, flat: bool | None = None) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError(
                "torch.distributed is not initialised; call "
                "torch.distributed.init_process_group (or deepspeed.init_distributed) first"
            )
        self._dist, self.group = dist, group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self._host_staging = dist.get_backend(group) == "gloo"
        self.flat = not self._host_staging if flat is None else flat
        # all_gather_single replaces the deprecated all_gather_into_tensor in newer torch.
        self._gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

    def _staged(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._host_staging and tensor.device.type != "cpu":
            return tensor.cpu()
        return tensor if tensor.is_contiguous() else tensor.contiguous()

    def start_all_reduce_sum_(self, tensor: torch.Tensor) -> Pending:
        if tensor.numel() == 0:
            return Pending((), lambda: tensor)
        buf = self._staged(tensor)
        work = self._dist.all_reduce(buf, op=self._dist.ReduceOp.SUM, group=self.group, async_op=True)
        return Pending((work.wait,), lambda: tensor if buf is tensor else tensor.copy_(buf))

    def start_all_gather(self, tensor: torch.Tensor) -> Pending:
        W = self.world_size
        if tensor.numel() == 0:
            return Pending((), lambda: tensor.new_empty((W, *tensor.shape)))
        buf = self._staged(tensor).reshape(-1)
        if self.flat:
            out = buf.new_empty(W * buf.numel())  # one collective into one buffer
            work = self._gather_single(out, buf, group=self.group, async_op=True)
            return Pending((work.wait,), lambda: out.view(W, *tensor.shape).to(tensor.device))
        out_WN = buf.new_empty((W, buf.numel()))
        piece = max(1, GLOO_GATHER_PIECE_BYTES // buf.element_size())
        works = [self._dist.all_gather([out_WN[w, start:start + piece] for w in range(W)],
                                       buf[start:start + piece], group=self.group, async_op=True)
                 for start in range(0, buf.numel(), piece)]
        return Pending([work.wait for work in works], lambda: out_WN.view(W, *tensor.shape).to(tensor.device))

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if tensor.numel() == 0:
            return tensor
        buf = self._staged(tensor)
        self._dist.broadcast(buf, src=src, group=self.group)
        return tensor if buf is tensor else tensor.copy_(buf)

    def barrier(self) -> None:
        self._dist.barrier(group=self.group)


class MpiCommunicator(Communicator):
    """mpi4py collectives (`Allreduce`, `Allgather`, `Bcast`) on contiguous host buffers."""

    def __init__(self, comm=None) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()

    @staticmethod
    def _host(tensor: torch.Tensor) -> torch.Tensor:
        """A contiguous CPU tensor whose numpy view MPI can read and write."""
        return tensor.detach().cpu().contiguous()

    # Non-blocking collectives progress inside MPI calls (mpich has no progress thread by
    # default): started ones may move little before `wait()`, but they are correct and keep
    # the order of collectives.

    def start_all_reduce_sum_(self, tensor: torch.Tensor) -> Pending:
        if tensor.numel() == 0:
            return Pending((), lambda: tensor)
        if tensor.dtype not in _MPI_SUMMABLE:
            # bf16: gather every rank's copy, sum in fp32 in rank order (same on all ranks).
            gather = self.start_all_gather(tensor)
            return Pending((), lambda: tensor.copy_(gather.wait().to(torch.float32).sum(dim=0)))
        host = self._host(tensor)
        request = self.comm.Iallreduce(self._MPI.IN_PLACE, host.numpy(), op=self._MPI.SUM)
        return Pending((request.Wait,), lambda: tensor.copy_(host), buffers=(host,))

    def start_all_gather(self, tensor: torch.Tensor) -> Pending:
        W = self.world_size
        if tensor.numel() == 0:
            return Pending((), lambda: tensor.new_empty((W, *tensor.shape)))
        # Move raw bytes: works for every dtype, bf16 included (numpy has no bf16).
        send_B = self._host(tensor).reshape(-1).view(torch.uint8)
        recv_WB = torch.empty((W, send_B.numel()), dtype=torch.uint8)
        request = self.comm.Iallgather(send_B.numpy(), recv_WB.numpy())
        return Pending((request.Wait,), lambda: recv_WB.view(tensor.dtype).view(W, *tensor.shape).to(tensor.device),
                       buffers=(send_B, recv_WB))

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if tensor.numel() == 0:
            return tensor
        host_B = self._host(tensor).reshape(-1).view(torch.uint8)
        self.comm.Bcast(host_B.numpy(), root=src)
        return tensor.copy_(host_B.view(tensor.dtype).view(tensor.shape))

    def barrier(self) -> None:
        self.comm.Barrier()
