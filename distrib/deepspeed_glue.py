"""DeepSpeed glue: DeepSpeed keeps the optimizer step, sparsepop does the gradient
exchange (as DeepSpeed's 1-bit Adam does, through `enable_backward_allreduce = False`).

    engine.backward(loss)                               # local gradients only
    if engine.is_gradient_accumulation_boundary():
        report = exchange_gradients(engine, exchange, step=step)   # averaged in place
    engine.step()
"""
from collections.abc import Sequence

import torch

from compression import ByteReport
from distrib.communicators import Communicator, MpiCommunicator, TorchCommunicator
from distrib.exchange import GradientExchange


def build_communicator(backend: str) -> Communicator:
    """`distributed.backend`: torch (torch.distributed: gloo on CPU, NCCL on GPU) or mpi (mpi4py)."""
    if backend == "torch":
        return TorchCommunicator()
    if backend == "mpi":
        return MpiCommunicator()
    raise ValueError(f"unknown distributed backend {backend!r}; valid: torch, mpi")


SHARED_MEMORY_OP = "deepspeed_shm_comm"  # DeepSpeed's ShareMemCommBuilder.NAME


def skip_shared_memory_op(deepspeed) -> None:
    """Keep DeepSpeed from JIT-building its shared-memory all-reduce when it starts on CPU.

    DeepSpeed's torch backend builds that C++ op in every process it starts (40-85 s of
    compiling on this 2-core machine whenever the cached build is missing or stale, and a
    build killed midway leaves a lock on which every later job waits forever), yet only
    `inference_all_reduce` uses it; our gradients go through torch.distributed (gloo)
    or mpi4py. DeepSpeed skips an op it records as incompatible, falling back to
    torch.distributed, so the op is recorded as such (tests/unit/distrib check this
    against the installed DeepSpeed)."""
    deepspeed.ops.__compatible_ops__[SHARED_MEMORY_OP] = False


def take_over_gradient_exchange(engine) -> None:
    """Switch off DeepSpeed's own all-reduce (honoured in backward and step under ZeRO 0/1)."""
    engine.enable_backward_allreduce = False


def exchange_gradients(engine, exchange: GradientExchange, *, step: int,
                       density_P: Sequence[float] | None = None) -> ByteReport:
    """Replace every parameter's local gradient by the workers' (compressed) average;
    `density_P`: each member's compression density (PBT's), as GradientExchange.exchange.

    All workers pass the same names in the same order; a parameter that got no gradient
    this step contributes zeros, so no worker skips a collective the others make."""
    params = {name: p for name, p in engine.module.named_parameters() if p.requires_grad}
    grads = {name: p.grad if p.grad is not None else torch.zeros_like(p) for name, p in params.items()}
    report = exchange.exchange_(grads, step=step, density_P=density_P)
    for name, param in params.items():
        param.grad = grads[name]
    return report
