"""Scope: layerwise vs global buckets, deterministic order, round trips."""

from __future__ import annotations

import pytest
import torch

from compression import GLOBAL_ID, GradLayout, TopKCompressor, decompress

P = 2


def grads():
    gen = torch.Generator().manual_seed(0)
    return {
        "z.weight": torch.randn(P, 4, 5, generator=gen),
        "a.bias": torch.randn(P, 3, generator=gen) + torch.tensor([100.0, -120.0, 140.0]),  # wins a global top-k
        "m.empty": torch.randn(P, 0, 2, generator=gen),
        "b.scale": torch.randn(P, 1, generator=gen, dtype=torch.float64),
    }


def test_layerwise_buckets_are_sorted_views():
    g = grads()
    flats = GradLayout.from_grads(g, "layerwise").flatten(g)
    assert [i for i, _ in flats] == ["a.bias", "b.scale", "z.weight"]  # sorted, empty left out
    assert [tuple(t.shape) for _, t in flats] == [(P, 3), (P, 1), (P, 20)]
    assert flats[2][1].data_ptr() == g["z.weight"].data_ptr()  # a view, no copy


def test_global_bucket_concatenates_in_name_order():
    g = grads()
    layout = GradLayout.from_grads(g, "global")
    [(bid, flat_PN)] = layout.flatten(g)
    assert bid == GLOBAL_ID and flat_PN.shape == (P, 24) and flat_PN.dtype == torch.float64
    torch.testing.assert_close(flat_PN[:, :3], g["a.bias"].double())
    torch.testing.assert_close(flat_PN[:, 4:], g["z.weight"].reshape(P, -1).double())


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_round_trip_restores_names_shapes_dtypes(scope):
    g = grads()
    layout = GradLayout.from_grads(g, scope)
    back = layout.unflatten(dict(layout.flatten(g)))
    assert list(back) == sorted(g)
    for name, t in g.items():
        assert back[name].shape == t.shape and back[name].dtype == t.dtype
        torch.testing.assert_close(back[name], t)
    assert layout.matches(g) and not layout.matches({**g, "new": torch.zeros(P, 1)})


def test_global_topk_competes_across_tensors_layerwise_does_not():
    g = grads()
    compressor = TopKCompressor(density=0.125)  # global: k = 3 of 24; layerwise: 1 per tensor (20 -> 2)
    sent = {}
    for scope in ("global", "layerwise"):
        layout = GradLayout.from_grads(g, scope)
        flats = {i: decompress(compressor.compress(t, step=0, tensor_id=i), torch.float64)
                 for i, t in layout.flatten(g)}
        sent[scope] = layout.unflatten(flats)
    # global: the three large bias entries take all the slots of each member
    assert torch.equal(sent["global"]["a.bias"], g["a.bias"])
    assert torch.all(sent["global"]["z.weight"] == 0)
    # layerwise: every tensor sends its own k
    assert (sent["layerwise"]["z.weight"] != 0).sum(dim=(1, 2)).tolist() == [2, 2]
    assert (sent["layerwise"]["a.bias"] != 0).sum(dim=1).tolist() == [1, 1]


def test_errors():
    with pytest.raises(ValueError, match="scope must be"):
        GradLayout.from_grads({}, "bucketed")
    with pytest.raises(ValueError, match="leading member axis"):
        GradLayout.from_grads({"a": torch.zeros(2, 3), "b": torch.zeros(3, 3)}, "layerwise")
    with pytest.raises(ValueError, match="scalars"):
        GradLayout.from_grads({"a": torch.tensor(1.0)}, "layerwise")
