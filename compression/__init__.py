"""Gradient compression: pure tensor functions, error-feedback memory, byte accounting.

Imports nothing else of sparsepop. See `compressors.py` for the shape legend and
`methods.py` for the registry of compression methods.

Names load on first use: the registry and the config come without torch, for the
launcher's study tools (launch/study/: the sweep, the network model, the study report).
"""

from importlib import import_module

_MODULE_OF = {
    **dict.fromkeys(["ByteReport", "byte_report"], "accounting"),
    **dict.fromkeys(["COMPRESSORS", "Compressor", "NoCompressor", "Payload", "RandomKCompressor", "TopKCompressor",
                     "build_compressor", "decompress", "derive_seed", "flat_positions",
                     "get_compressor_class", "member_counts", "num_selected", "seeded_generator"], "compressors"),
    "CompressionConfig": "config",
    "ErrorFeedback": "error_feedback",
    **dict.fromkeys(["GLOBAL_ID", "GradLayout"], "layout"),
    **dict.fromkeys(["METHODS", "Collective", "Method"], "methods"),
    "to_device": "transfer",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
