"""The registry of compression methods (compression/methods.py) and what reads it: the
config's names, the compressors, the exchange's collective, the sweep's ignored keys and
the network model.

Shape legend: P members, N coordinates per member.
"""
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import torch

from compression import COMPRESSORS, METHODS, Collective, CompressionConfig, Compressor, build_compressor
from distrib.communicators import Communicator, Pending
from distrib.exchange import GradientExchange
from launch.study.netmodel import FORMULAS, collective_for
from launch.study.sweep import ignored_by

REPO = Path(__file__).resolve().parents[2]
CONFIG_KEYS = [k for k in CompressionConfig.model_fields if k != "method"]
CASES = [("none", "shared"), ("topk", "shared"), ("randomk", "shared"), ("randomk", "independent"),
         ("powersgd", "shared")]


def test_the_config_names_exactly_the_registered_methods():
    assert get_args(CompressionConfig.model_fields["method"].annotation) == tuple(METHODS)
    assert all(m.name == name and m.label for name, m in METHODS.items())


def test_entries_read_config_keys_and_name_real_compressors():
    for m in METHODS.values():
        assert set(m.reads) <= set(CONFIG_KEYS), m.name
    assert set(COMPRESSORS) == {n for n, m in METHODS.items() if m.compressor}
    assert all(issubclass(cls, Compressor) and cls.__name__ == METHODS[n].compressor for n, cls in COMPRESSORS.items())


def test_the_registry_loads_without_torch():
    code = "import sys; from compression import METHODS, CompressionConfig; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr


class Recording(Communicator):
    """One worker that records which collectives the exchange calls."""

    rank, world_size = 0, 1

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start_all_reduce_sum_(self, tensor):
        self.calls.append("all_reduce")
        return Pending((), lambda: tensor)

    def start_all_gather(self, tensor):
        self.calls.append("all_gather")
        return Pending((), lambda: tensor.unsqueeze(0))

    def broadcast_(self, tensor, src=0):
        return tensor

    def barrier(self):
        pass


CALLS = {Collective.ALL_REDUCE: ["all_reduce"], Collective.ALL_GATHER: ["all_gather"],
         Collective.TWO_ALL_REDUCES: ["all_reduce", "all_reduce"]}


@pytest.mark.parametrize("method,mode", CASES)
def test_the_exchange_runs_the_collective_of_the_registry(method, mode):
    rank = {"rank": 1} if method == "powersgd" else {}
    config = CompressionConfig(method=method, randomk_mode=mode, density=0.25, warmup_steps=1, **rank)
    comm = Recording()
    exchange = GradientExchange(config=config, communicator=comm, seed=1)
    collective = METHODS[method].collective(mode)
    assert exchange.collective is collective is collective_for(method, mode)
    gen = torch.Generator().manual_seed(0)
    grads = {"w": torch.randn(2, 8, 6, generator=gen), "b": torch.randn(2, 8, generator=gen)}
    exchange.exchange(grads, step=0)  # warm-up: dense, one all-reduce whatever the method
    assert comm.calls == ["all_reduce"]
    comm.calls.clear()
    result = exchange.exchange(grads, step=1)
    assert comm.calls == CALLS[collective]
    # indices travel exactly when the payloads are all-gathered
    assert all(p.indices_on_wire == (collective is Collective.ALL_GATHER) for p in result.payloads.values())


def test_methods_reading_density_send_each_member_its_own_k():
    grad_PN = torch.randn(2, 10)
    for name, cls in COMPRESSORS.items():
        compressor = build_compressor(CompressionConfig(method=name))
        payload = compressor.compress(grad_PN, step=0, tensor_id="x", density_P=[0.1, 0.5])
        assert payload.k_P == ((1, 5) if "density" in METHODS[name].reads else (10, 10)), name


def test_the_sweep_ignores_the_keys_a_method_does_not_read():
    assert {m: ignored_by(m) for m in METHODS} == {  # IGNORED_BY_METHOD as it was written out
        "none": tuple(f"compression.{k}" for k in ("density", "error_feedback", "scope", "randomk_mode",
                                                   "value_dtype", "warmup_steps", "rank", "min_compression_rate")),
        "topk": ("compression.randomk_mode", "compression.rank", "compression.min_compression_rate"),
        "randomk": ("compression.rank", "compression.min_compression_rate"),
        "powersgd": ("compression.density", "compression.randomk_mode"),
    }
    for name, m in METHODS.items():  # what a method reads and what it ignores: every key once
        assert sorted([*m.reads, *(k.split(".")[1] for k in ignored_by(name))]) == sorted(CONFIG_KEYS)


def test_the_network_model_prices_every_collective():
    assert set(FORMULAS) == set(Collective)
    assert all(collective_for(m, mode) is METHODS[m].collective(mode) for m, mode in CASES)
