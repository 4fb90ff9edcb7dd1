"""The namespace cluster: a real multi-node Ray cluster on one machine (root only).
`network`: namespaces, links, shaping; `ray_cluster`: one Ray node per host; `cli`: the
command (`python -m launch.netns`, usage in its docstring) and the `cluster` context manager."""
from launch.netns.cli import Interrupted, cluster
from launch.netns.network import PREFIX, parse_rate, ns_names
from launch.netns.ray_cluster import node_env

__all__ = ["PREFIX", "Interrupted", "cluster", "node_env", "ns_names", "parse_rate"]
