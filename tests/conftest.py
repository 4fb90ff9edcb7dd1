import os

# No telemetry from test clusters: traffic stays on this machine.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
