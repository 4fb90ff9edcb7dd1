"""CompressionConfig validation and the compressor registry."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from compression import (
                         COMPRESSORS,
                         CompressionConfig,
                         NoCompressor,
                         RandomKCompressor,
                         TopKCompressor,
                         build_compressor,
                         get_compressor_class,
                         )


def test_defaults():
    c = CompressionConfig()
    assert (c.method, c.density, c.error_feedback, c.scope) == ("none", 0.01, True, "layerwise")
    assert (c.randomk_mode, c.value_dtype, c.warmup_steps) == ("shared", "fp32", 0)
    assert all(f.description for f in CompressionConfig.model_fields.values())


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_density_outside_unit_interval_is_rejected_with_a_hint(density):
    with pytest.raises(ValidationError, match=r"density must be in \(0, 1\]"):
        CompressionConfig(density=density)


@pytest.mark.parametrize("value", [1, 0, "yes", "true", None])
def test_overlap_takes_booleans_only(value):
    with pytest.raises(ValidationError, match="overlap is true or false"):
        CompressionConfig(overlap=value)
    assert CompressionConfig(overlap=False).overlap is False


def test_density_one_is_allowed():
    assert CompressionConfig(method="topk", density=1.0).density == 1.0


def test_unknown_keys_and_bad_literals_are_rejected():
    with pytest.raises(ValidationError, match="extra"):
        CompressionConfig(desnity=0.1)
    with pytest.raises(ValidationError, match="'none', 'topk', 'randomk' or 'powersgd'"):
        CompressionConfig(method="dgc")
    with pytest.raises(ValidationError, match="fp32"):
        CompressionConfig(value_dtype="int8")
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        CompressionConfig(warmup_steps=-1)


def test_frozen():
    c = CompressionConfig()
    with pytest.raises(ValidationError):
        c.density = 0.5


def test_is_dense_covers_method_none_and_warmup():
    assert CompressionConfig(method="none").is_dense(1000)
    c = CompressionConfig(method="topk", warmup_steps=3)
    assert [c.is_dense(s) for s in range(5)] == [True, True, True, False, False]
    assert not CompressionConfig(method="randomk").is_dense(0)


def test_registry_lists_valid_names_on_error():
    assert set(COMPRESSORS) == {"none", "topk", "randomk"}
    assert get_compressor_class("topk") is TopKCompressor
    with pytest.raises(ValueError, match="valid names: none, randomk, topk"):
        get_compressor_class("dgc")


def test_build_compressor_from_config():
    assert isinstance(build_compressor(CompressionConfig()), NoCompressor)
    rk = build_compressor(
        CompressionConfig(method="randomk", randomk_mode="independent", value_dtype="bf16"),
        seed=5,
        rank=3,
    )
    assert isinstance(rk, RandomKCompressor)
    assert (rk.mode, rk.seed, rk.rank, rk.value_dtype) == ("independent", 5, 3, "bf16")
    # independent indices travel (all-gathered), shared ones do not (all-reduced values):
    # the collectives are the registry's, checked in test_compression_methods.py
    x_PN = torch.ones(2, 10)
    assert rk.compress(x_PN, step=0, tensor_id="x").indices_on_wire
    shared = build_compressor(CompressionConfig(method="randomk"))
    assert not shared.compress(x_PN, step=0, tensor_id="x").indices_on_wire
