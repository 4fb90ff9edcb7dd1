import os

import pytest

# No telemetry from test clusters: traffic stays on this machine.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (minutes of compiling on 2 cores) run only with SPARSEPOP_SLOW=1."""
    if os.environ.get("SPARSEPOP_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set SPARSEPOP_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
