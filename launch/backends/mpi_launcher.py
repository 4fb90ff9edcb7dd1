"""Starting the W ranks of an mpiexec job on one machine so that nothing of it listens
beyond the machine (docs/scaling.md, "What listens where"): MPICH's fork-based process
manager, `mpiexec.gforker`, forks the ranks and talks to them over pipes (hydra's `mpiexec`
keeps a control port open on every interface, with no option to bind it elsewhere), and
MPICH's UCX transport stays on `lo` (`UCX_NET_DEVICES`, unless the caller set it).
`launch sweep` starts its trials this way (a trial's ranks share one node)."""
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

GFORKER = "mpiexec.gforker"
LOOPBACK_ENV = {"UCX_NET_DEVICES": "lo"}


def find_gforker() -> str | None:
    """The `mpiexec.gforker` of the `mpich` wheel beside this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name(GFORKER)
    return str(beside) if beside.exists() else shutil.which(GFORKER)


def loopback_mpiexec(workers: int, argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """(command, environment) that run `argv` as `workers` ranks on this machine, listening
    on loopback only. FileNotFoundError when there is no mpiexec.gforker."""
    gforker = find_gforker()
    if gforker is None:
        raise FileNotFoundError(f"{GFORKER} was not found beside the Python interpreter or on PATH; "
                                "install the `mpich` wheel (pip install mpich)")
    return [gforker, "-n", str(workers), *argv], {**LOOPBACK_ENV, **env}
