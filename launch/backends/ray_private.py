"""The Ray internals sparsepop relies on where Ray has no public API, in one place.
tests/unit/launch/test_ray_private.py fails loudly when a Ray upgrade changes them."""


def last_recorded_cluster() -> str | None:
    """The address `ray.init(address="auto")` would join ("host:port"), or None when no
    cluster is recorded or running. Ray resolves "auto" from its temp dir's record of the
    last head started on this machine; there is no public call for it."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:  # no cluster recorded and none running
        return None
