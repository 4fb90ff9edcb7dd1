"""Per-member densities (PBT mutating `density`): each member sends its own k, with exact
bytes, through the same single collective; one density for all is the same layout.

The exchange runs on a one-rank MPI communicator (mpi4py's COMM_WORLD under pytest):
its average is this worker's own payload, so every expected value is a plain per-row
top-k or random-k computed here by hand. Two real workers: tests/integration/test_exchange_gloo.py.

Shape legend: P members, N coordinates per member in a bucket, k selected per member.
"""
import pytest
import torch

from compression import CompressionConfig, RandomKCompressor, TopKCompressor, decompress, num_selected
from distrib.communicators import MpiCommunicator
from distrib.exchange import GradientExchange
from pbt.config import PBTConfig
from pbt.controller import PBTController

DENSITIES = [0.01, 0.2, 0.05, 0.2]  # two members share a k: they share one batched topk
SHAPES = {"a.weight": (4, 30, 40), "b.bias": (4, 40), "c.scale": (4, 1)}


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def grads(step=0):
    return {name: randn(*shape, seed=100 * step + i) for i, (name, shape) in enumerate(SHAPES.items())}


def exchange(**config) -> GradientExchange:
    return GradientExchange(config=CompressionConfig(**config), communicator=MpiCommunicator(), seed=3)


def top_rows(grad_PN: torch.Tensor, k_P) -> torch.Tensor:
    """Reference: row p keeps its k_P[p] largest magnitudes, zeros elsewhere."""
    out_PN = torch.zeros_like(grad_PN)
    for p, k in enumerate(k_P):
        idx = grad_PN[p].abs().topk(k).indices
        out_PN[p, idx] = grad_PN[p, idx]
    return out_PN


def test_topk_member_rows_send_their_own_k():
    grad_PN = randn(4, 1000)
    payload = TopKCompressor(density=0.5).compress(grad_PN, step=0, tensor_id="w", density_P=DENSITIES)
    k_P = tuple(num_selected(1000, d) for d in DENSITIES)
    assert payload.k_P == k_P == (10, 200, 50, 200)
    assert payload.idx_K.shape == payload.values_K.shape == (sum(k_P),)  # rows concatenated, no padding
    assert payload.nbytes_P == tuple(8 * k for k in k_P)  # fp32 value + int32 index per coordinate
    assert torch.equal(decompress(payload), top_rows(grad_PN, k_P))


def test_topk_on_rows_long_enough_for_the_sampled_threshold():
    grad_PN = randn(2, 300_000, seed=1)  # >= 2**18: topk_indices takes its threshold path
    payload = TopKCompressor().compress(grad_PN, step=4, tensor_id="w", density_P=[0.001, 0.01])
    assert payload.k_P == (300, 3000)
    assert torch.equal(decompress(payload), top_rows(grad_PN, payload.k_P))


@pytest.mark.parametrize("mode", ["shared", "independent"])
def test_randomk_member_rows_send_their_own_k(mode):
    grad_PN = randn(4, 500)
    workers = [RandomKCompressor(mode=mode, seed=9, rank=r) for r in (0, 1)]
    payloads = [c.compress(grad_PN, step=2, tensor_id="w", density_P=DENSITIES) for c in workers]
    k_P = tuple(num_selected(500, d) for d in DENSITIES)
    assert payloads[0].k_P == k_P and payloads[0].indices_on_wire == (mode == "independent")
    assert payloads[0].nbytes_P == tuple((8 if mode == "independent" else 4) * k for k in k_P)
    rows = payloads[0].idx_K.long().split(k_P)
    for p, row in enumerate(rows):
        assert row.unique().numel() == k_P[p] and torch.equal(decompress(payloads[0])[p, row], grad_PN[p, row])
    assert torch.equal(payloads[0].idx_K, payloads[1].idx_K) == (mode == "shared")


def test_one_density_for_all_takes_the_path_of_no_densities():
    for config in ({"method": "topk"}, {"method": "randomk"}, {"method": "randomk", "randomk_mode": "independent"}):
        plain, given = exchange(density=0.2, **config), exchange(density=0.9, **config)
        for step in range(3):
            a = plain.exchange(grads(step), step=step)
            b = given.exchange(grads(step), step=step, density_P=[0.2] * 4)
            assert all(len(set(p.k_P)) == 1 and p.idx_K.numel() == 4 * p.k_P[0] for p in b.payloads.values())
            assert all(torch.equal(a.grads[n], b.grads[n]) for n in SHAPES), config
            assert a.bytes == b.bytes
        assert all(torch.equal(x, y) for x, y in zip(plain.state_dict().values(), given.state_dict().values()))


def test_exchange_averages_each_member_at_its_density_with_exact_bytes():
    ex = exchange(method="topk", density=0.5)
    g = grads()
    result = ex.exchange(g, step=0, density_P=DENSITIES)
    for name, grad in g.items():
        grad_PN = grad.reshape(4, -1)
        k_P = [num_selected(grad_PN.shape[1], d) for d in DENSITIES]
        assert torch.equal(result.grads[name], top_rows(grad_PN, k_P).reshape(grad.shape)), name
    n_B = [30 * 40, 40, 1]
    assert result.bytes.bytes_sent_P == tuple(8 * sum(num_selected(n, d) for n in n_B) for d in DENSITIES)
    assert result.bytes.dense_bytes == 4 * sum(n_B)
    assert result.bytes.ratio_P[0] < result.bytes.ratio_P[2] < result.bytes.ratio_P[1] == result.bytes.ratio_P[3]
    assert result.payloads["c.scale"].k_P == (1,) * 4  # N = 1: every member sends its one coordinate


def test_error_feedback_keeps_exactly_what_each_member_did_not_send():
    ex = exchange(method="randomk", density=0.5, randomk_mode="independent")
    fed, sent = {n: 0 for n in SHAPES}, {n: 0 for n in SHAPES}
    for step, density_P in enumerate([DENSITIES, [0.5, 0.01, 0.2, 0.01], DENSITIES]):  # densities change
        g = grads(step)
        result = ex.exchange(g, step=step, density_P=density_P)
        for name in SHAPES:
            fed[name] = fed[name] + g[name].double()
            sent[name] = sent[name] + result.grads[name].double()  # one worker: the average is what it sent
    for name, shape in SHAPES.items():
        residual = ex.state_dict()[f"residual.{name}"].double().reshape(shape)
        torch.testing.assert_close(sent[name] + residual, fed[name], rtol=0, atol=1e-5)


def test_global_scope_selects_each_member_over_all_its_coordinates():
    g = grads()
    result = exchange(method="topk", scope="global").exchange(g, step=0, density_P=DENSITIES)
    flat_PN = torch.cat([t.reshape(4, -1) for t in g.values()], dim=1)
    expected_PN = top_rows(flat_PN, [num_selected(flat_PN.shape[1], d) for d in DENSITIES])
    got_PN = torch.cat([result.grads[n].reshape(4, -1) for n in g], dim=1)
    assert torch.equal(got_PN, expected_PN)


class CountingCommunicator(MpiCommunicator):
    """The real one-rank MPI communicator, recording the buffers its collectives move."""

    def __init__(self):
        super().__init__()
        self.moved = []

    def start_all_gather(self, tensor):  # the blocking all_gather starts one too
        self.moved.append(("all_gather", tensor.numel() * tensor.element_size()))
        return super().start_all_gather(tensor)

    def start_all_reduce_sum_(self, tensor):
        self.moved.append(("all_reduce", tensor.numel() * tensor.element_size()))
        return super().start_all_reduce_sum_(tensor)


@pytest.mark.parametrize("config, collective", [
    ({"method": "topk", "value_dtype": "fp16"}, "all_gather"),
    ({"method": "randomk", "randomk_mode": "independent"}, "all_gather"),
    ({"method": "randomk", "value_dtype": "fp16"}, "all_reduce"),
])
def test_one_collective_per_step_carrying_exactly_the_bytes_counted(config, collective):
    comm = CountingCommunicator()
    ex = GradientExchange(config=CompressionConfig(**config), communicator=comm, seed=0)
    report = ex.exchange_(grads(), step=0, density_P=DENSITIES)
    assert comm.moved == [(collective, sum(report.bytes_sent_P))]  # nothing padded


def test_warmup_and_dense_steps_ignore_densities():
    ex = exchange(method="topk", warmup_steps=1)
    dense = ex.exchange(grads(), step=0, density_P=DENSITIES).bytes
    assert dense.dense_step and set(dense.bytes_sent_P) == {dense.dense_bytes}
    assert len(set(ex.exchange(grads(1), step=1, density_P=DENSITIES).bytes.bytes_sent_P)) == 3
    assert exchange(method="none").exchange(grads(), step=0, density_P=DENSITIES).bytes.ratio_P == (1.0,) * 4


def test_bad_member_densities_are_refused():
    with pytest.raises(ValueError, match="got 3 member densities for a gradient of 4 members"):
        exchange(method="topk").exchange(grads(), step=0, density_P=DENSITIES[:3])
    with pytest.raises(ValueError, match=r"member densities must be in \(0, 1\]"):
        exchange(method="topk").exchange(grads(), step=0, density_P=[0.1, 0.0, 0.1, 0.1])


def test_bytes_penalty_makes_pbt_drop_the_members_that_send_most():
    """Equal losses: only the bytes each member sent at its own density separate them."""
    config = PBTConfig(perturbation_interval=10, resample_probability=0.0,
                       hyperparam_mutations={"density": [0.01, 0.05, 0.2]})
    with_penalty, without = (PBTController(config.model_copy(update={"bytes_penalty": penalty}), members=8,
                                           seed=1, defaults={"density": 0.05}) for penalty in (1.0, 0.0))
    density_P = with_penalty.hyperparams["density"]
    assert density_P == without.hyperparams["density"] and len(set(density_P)) == 3
    grads_8 = {"w": randn(8, 40, 30)}
    ratio_P = exchange(method="topk").exchange(grads_8, step=9, density_P=density_P).bytes.ratio_P
    assert ratio_P == tuple(8 * num_selected(1200, d) / (4 * 1200) for d in density_P)

    scores = [2.0] * 8  # ties: the lower member index ranks worse
    assert [e.target for e in without.decide(10, scores, bytes_ratio_P=ratio_P)] == [0, 1]
    events = with_penalty.decide(10, scores, bytes_ratio_P=ratio_P)
    heaviest = sorted(range(8), key=lambda m: (-ratio_P[m], m))[:2]
    assert sorted(e.target for e in events) == sorted(heaviest) != [0, 1]
    for e in events:  # the target takes the source's density, then moves it to a neighbour
        assert e.old["density"] == 0.2 and e.source_score < e.target_score
        assert density_P[e.source] == 0.01 and with_penalty.hyperparams["density"][e.target] in (0.01, 0.05)
