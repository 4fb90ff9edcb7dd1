"""Rank 0's rendezvous store listens on the address it was given, not on every interface
(torch's TCPStore alone listens on all of them, whatever MASTER_ADDR says)."""
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from distrib.rendezvous import LOOPBACK, join_process_group, serve_store
from tests.listeners import is_loopback, is_wildcard, listeners


@pytest.fixture
def gloo_on_loopback(monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    for name in ("MASTER_ADDR", "MASTER_PORT"):  # join_process_group sets them: put back after
        monkeypatch.delenv(name, raising=False)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_the_store_and_the_group_listen_on_loopback_only(gloo_on_loopback):
    before = {(a, p) for a, p, _, _ in listeners({os.getpid()})}
    address, port = serve_store(LOOPBACK, timeout_s=30)
    join_process_group("gloo", rank=0, world_size=1, address=address, port=port, timeout_s=30)
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == (LOOPBACK, str(port))
    tensor = torch.ones(3)
    dist.all_reduce(tensor)
    assert tensor.tolist() == [1.0, 1.0, 1.0]
    ours = [(a, p) for a, p, _, _ in listeners({os.getpid()}) if (a, p) not in before]
    assert (LOOPBACK, port) in ours, ours  # the store
    assert all(is_loopback(a) and not is_wildcard(a) for a, _ in ours), ours


def test_a_plain_tcpstore_would_listen_everywhere():
    # Why distrib/rendezvous.py exists: if torch ever binds MASTER_ADDR itself, it can go.
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
    store = dist.TCPStore(LOOPBACK, port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
    assert any(is_wildcard(a) for a, p, _, _ in listeners({os.getpid()}) if p == port)
    del store
