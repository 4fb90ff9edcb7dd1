"""The environment `make quickstart` starts its Ray head with (launch/quickstart.py)."""
from distrib.rendezvous import LOOPBACK_INTERFACES
from pbt.ray.private_api import CLUSTERS_ENV
from launch.quickstart import loopback_head_env


def test_the_head_runs_in_single_machine_mode_with_process_groups_on_loopback():
    env = loopback_head_env({"PATH": "/bin"})
    assert env[CLUSTERS_ENV] == "0" and env["PATH"] == "/bin"
    assert {name: env[name] for name in LOOPBACK_INTERFACES} == {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}


def test_an_interface_the_user_chose_is_kept():
    assert loopback_head_env({"GLOO_SOCKET_IFNAME": "eth1"})["GLOO_SOCKET_IFNAME"] == "eth1"
