"""SIGINT and SIGTERM on a job's driver: the job ends as `interrupted`, with its summary and
a line saying how to resume, instead of dying wherever the signal lands (no Ray here: the
mpiexec launcher uses it too).

Why the driver needs its own handlers: Ray Train's `fit()` installs a SIGINT handler that
calls `sys.exit` from inside `fit()` (past any `except Exception`), `ray.init` one that
turns SIGTERM into `sys.exit(15)`, and Ray Tune one that stops the experiment; each of them
only from the main thread. So a Ray flavour's fit runs in a thread of its own
(`run_in_thread`) while the main thread waits with these handlers, and a signal raises
`Interrupted` there. Under mpiexec, which forwards the signal to every rank, a rank only
notes it (`signals_noted`) and the ranks agree to stop together at the end of a step: a
rank that left in the middle of a collective would leave the others waiting in it.
"""
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop signal reached the driver. A BaseException, like KeyboardInterrupt, so that an
    `except Exception` that records a failure does not take it for one."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


@contextlib.contextmanager
def signals_raise_interrupted():
    """Inside: SIGINT/SIGTERM raise Interrupted in the main thread. The first one only: a
    second signal while the job winds down ends the process as the signal would by default."""
    def handler(signum, _frame):
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class StopRequest:
    """The stop signal a process received (0: none yet)."""

    signum: int = 0


@contextlib.contextmanager
def signals_noted() -> Iterator[StopRequest]:
    """Inside: SIGINT/SIGTERM are noted in the yielded StopRequest; a second one ends the
    process as the signal would by default."""
    request = StopRequest()

    def handler(signum, _frame):
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        request.signum = signum

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_in_thread(work: Callable[[], T]) -> T:
    """`work()` in a daemon thread, its result or exception handed back; the main thread only
    waits (interruptibly: a signal handler's exception ends the wait). The thread is a
    daemon because an interrupted job ends without waiting for it: its Ray calls end when
    the driver leaves Ray."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = work()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread as is
            outcome["error"] = err

    thread = threading.Thread(target=target, name="fit", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def say_how_to_resume(run_dir: Path, interrupted: Interrupted, *, mpi_ranks: int | None = None) -> None:
    launcher = f"mpiexec -n {mpi_ranks} " if mpi_ranks else ""
    print(f"interrupted ({interrupted}); resume with: {launcher}python -m launch resume {run_dir}",
          file=sys.stderr, flush=True)
