"""torch.distributed's rendezvous store, listening on one address only.

`init_process_group("env://")` makes rank 0 serve a TCPStore (no authentication) that
listens on every interface, whatever MASTER_ADDR says: MASTER_ADDR only tells the other
ranks where to connect. Here rank 0 binds the listening socket itself, to `address`
(127.0.0.1 for a job on one machine, the cluster interface's address otherwise), and
hands it to the store (`master_listen_fd`); the port is the one the kernel gave that
socket, so no other process can take it between choosing and listening.

    address, port = serve_store(address)                           # rank 0 only
    join_process_group(backend, rank=r, world_size=W, address=address, port=port)

The process group's own connections (gloo's pairs, NCCL's bootstrap) listen on the
interface that GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME name, else on the address the host
name resolves to (often the machine's LAN address): a job on one machine sets both to the
loopback interface (`LOOPBACK_INTERFACES`) unless the user chose one.
"""
import os
import socket
from datetime import timedelta

import torch.distributed as dist

LOOPBACK = "127.0.0.1"
LOOPBACK_INTERFACES = {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}

_served: dict[int, dist.TCPStore] = {}  # port -> the store rank 0 serves, until its process group holds it


def use_loopback_interfaces() -> None:
    """Process groups created by this process (and those it starts) listen on loopback."""
    for name, interface in LOOPBACK_INTERFACES.items():
        os.environ.setdefault(name, interface)


def serve_store(address: str, *, timeout_s: float = 1800) -> tuple[str, int]:
    """On rank 0's process: start a TCPStore listening on `address` only, on a free port;
    returns (address, port) for every rank's `join_process_group`."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.listen(socket.SOMAXCONN)
    port = sock.getsockname()[1]
    _served[port] = dist.TCPStore(address, port, is_master=True, timeout=timedelta(seconds=timeout_s),
                                  wait_for_workers=False, master_listen_fd=sock.detach())
    return address, port


def join_process_group(backend: str, *, rank: int, world_size: int, address: str, port: int,
                       timeout_s: float = 1800) -> None:
    """`torch.distributed.init_process_group` over the store `serve_store` started (rank 0
    must call it in this process first). MASTER_ADDR/MASTER_PORT are set as with env://,
    for the libraries that read them (DeepSpeed)."""
    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port))
    timeout = timedelta(seconds=timeout_s)
    store = _served.pop(port) if rank == 0 else dist.TCPStore(address, port, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
