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
    in rank order.

Shape legend: W = world size (workers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

# dtypes MPI can sum natively in mpich through numpy (float16 maps to MPIX_C_FLOAT16).
# bfloat16 has no numpy dtype: it is gathered as raw bytes and summed locally in fp32.
_MPI_SUMMABLE = {torch.float16, torch.float32, torch.float64, torch.int32, torch.int64}


class Communicator(ABC):
    """rank / world_size and in-place sum, stacked all-gather, broadcast, barrier."""

    rank: int
    world_size: int

    @abstractmethod
    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over all ranks, in place; returns `tensor`."""

    @abstractmethod
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """`[W, *tensor.shape]`: every rank's tensor, in rank order."""

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

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.numel() == 0:
            return tensor
        buf = self._staged(tensor)
        self._dist.all_reduce(buf, op=self._dist.ReduceOp.SUM, group=self.group)
        if buf is not tensor:
            tensor.copy_(buf)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        W = self.world_size
        if tensor.numel() == 0:
            return tensor.new_empty((W, *tensor.shape))
        buf = self._staged(tensor).reshape(-1)
        if self.flat:
            out = buf.new_empty(W * buf.numel())  # one collective into one buffer
            self._gather_single(out, buf, group=self.group)
            return out.view(W, *tensor.shape).to(tensor.device)
        out_WN = buf.new_empty((W, buf.numel()))
        piece = max(1, GLOO_GATHER_PIECE_BYTES // buf.element_size())
        works = [self._dist.all_gather([out_WN[w, start:start + piece] for w in range(W)],
                                       buf[start:start + piece], group=self.group, async_op=True)
                 for start in range(0, buf.numel(), piece)]
        for work in works:
            work.wait()
        return out_WN.view(W, *tensor.shape).to(tensor.device)

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if tensor.numel() == 0:
            return tensor
        buf = self._staged(tensor)
        self._dist.broadcast(buf, src=src, group=self.group)
        if buf is not tensor:
            tensor.copy_(buf)
        return tensor

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

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.numel() == 0:
            return tensor
        if tensor.dtype not in _MPI_SUMMABLE:
            # bf16: gather every rank's copy, sum in fp32 in rank order (same on all ranks).
            total = self.all_gather(tensor).to(torch.float32).sum(dim=0)
            return tensor.copy_(total)
        host = self._host(tensor)
        self.comm.Allreduce(self._MPI.IN_PLACE, host.numpy(), op=self._MPI.SUM)
        return tensor.copy_(host)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        W = self.world_size
        if tensor.numel() == 0:
            return tensor.new_empty((W, *tensor.shape))
        # Move raw bytes: works for every dtype, bf16 included (numpy has no bf16).
        send_B = self._host(tensor).reshape(-1).view(torch.uint8)
        recv_WB = torch.empty((W, send_B.numel()), dtype=torch.uint8)
        self.comm.Allgather(send_B.numpy(), recv_WB.numpy())
        out = recv_WB.view(tensor.dtype).view(W, *tensor.shape)
        return out.to(tensor.device)

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if tensor.numel() == 0:
            return tensor
        host_B = self._host(tensor).reshape(-1).view(torch.uint8)
        self.comm.Bcast(host_B.numpy(), root=src)
        return tensor.copy_(host_B.view(tensor.dtype).view(tensor.shape))

    def barrier(self) -> None:
        self.comm.Barrier()
