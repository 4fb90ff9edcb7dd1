"""Ray Train's process group with its rendezvous store listening on the node's address only.

Ray Train's torch backend starts each worker group's process group with
`init_process_group("env://")` on worker 0's node address and a free port; rank 0's
TCPStore then listens on every interface (see distrib/rendezvous.py). This backend takes
the same steps, but rank 0 serves the store on its node's address alone: 127.0.0.1 on a
local instance (pbt/ray/private_api.py: `ray_on_loopback_only`), the cluster
interface's address on a cluster. `ray_session.ray_trainer` uses it for every Ray flavour.
"""
import os
from dataclasses import dataclass

import ray
from ray.train.torch import TorchConfig

from distrib.rendezvous import join_process_group, serve_store
from pbt.ray.private_api import ray_train_torch_backend

_TorchBackend, _set_torch_distributed_env_vars = ray_train_torch_backend()


def _serve_on_node_address(timeout_s: float) -> tuple[str, int]:
    return serve_store(ray.util.get_node_ip_address(), timeout_s=timeout_s)


def _join(backend: str, world_rank: int, world_size: int, address: str, port: int, timeout_s: float) -> None:
    if backend == "nccl":  # as Ray Train does: a timed-out NCCL collective fails instead of hanging
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    join_process_group(backend, rank=world_rank, world_size=world_size, address=address, port=port,
                       timeout_s=timeout_s)


class BoundRendezvousBackend(_TorchBackend):
    """Ray Train's torch backend (its shutdown and hooks), with its own process-group start."""

    def on_start(self, worker_group, backend_config) -> None:
        timeout_s = backend_config.timeout_s
        address, port = worker_group.execute_single(0, _serve_on_node_address, timeout_s)
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get([worker_group.execute_single_async(rank, _join, backend_config.backend, rank, len(worker_group),
                                                   address, port, timeout_s)
                 for rank in range(len(worker_group))])


@dataclass
class BoundTorchConfig(TorchConfig):
    """TorchConfig whose process group's store listens on the node's address only;
    `backend` must be named (gloo or nccl: distributed.comm_backend)."""

    @property
    def backend_cls(self):
        return BoundRendezvousBackend
