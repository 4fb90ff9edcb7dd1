"""Gradient compression: pure tensor functions, error-feedback memory, byte accounting.

Imports nothing else of sparsepop. See `compressors.py` for the shape legend.
"""

from .accounting import ByteReport, byte_report
from .compressors import (
    COMPRESSORS,
    Compressor,
    NoCompressor,
    Payload,
    RandomKCompressor,
    TopKCompressor,
    build_compressor,
    decompress,
    dense_compressor,
    derive_seed,
    flat_positions,
    get_compressor_class,
    member_counts,
    num_selected,
)
from .config import CompressionConfig
from .error_feedback import ErrorFeedback
from .layout import GLOBAL_ID, GradLayout

__all__ = [
    "COMPRESSORS",
    "GLOBAL_ID",
    "ByteReport",
    "CompressionConfig",
    "Compressor",
    "ErrorFeedback",
    "GradLayout",
    "NoCompressor",
    "Payload",
    "RandomKCompressor",
    "TopKCompressor",
    "build_compressor",
    "byte_report",
    "decompress",
    "dense_compressor",
    "derive_seed",
    "flat_positions",
    "get_compressor_class",
    "member_counts",
    "num_selected",
]
