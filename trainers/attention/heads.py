"""Which attention kernels read the head count, in one place.

A kernel that learns weights per head (rpe_fft's relative-position tables, [P, H, ...])
sets the class attribute `uses_heads = True` and takes a `heads=` keyword (H, the model's
`n_heads`) in its constructor. A class without the attribute takes no such keyword, so
kinds that treat every head alike need no change: read the attribute only through these
helpers (as for grids, trainers/attention/grid.py). Kernels learn H from q's shape at
forward time; what needs it at construction is a parameter's shape.
"""


def uses_heads(cls: type) -> bool:
    return getattr(cls, "uses_heads", False)


def heads_kwargs(cls: type, heads: int) -> dict:
    """The `heads=` keyword for a kernel's constructor: only kernels that read it take one."""
    return {"heads": heads} if uses_heads(cls) else {}
