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
        # The `run_in_thread` thread the signal left running, if any: see `let_end`.
        self.unfinished: threading.Thread | None = None

    def let_end(self, timeout_s: float = 10.0) -> None:
        """Wait (a bounded while) for the work the signal interrupted, once the caller has
        made it fail (a Ray flavour: by leaving Ray, which fails its Ray calls). A process
        that exits with that thread still inside Ray's core worker can die of SIGSEGV at
        exit instead of with the signal's status."""
        if self.unfinished is not None:
            self.unfinished.join(timeout_s)

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
    waits (interruptibly: a signal handler's exception ends the wait, carrying the thread,
    `Interrupted.let_end`). The thread is a daemon so that a job whose work does not end
    when told still exits."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = work()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread as is
            outcome["error"] = err

    thread = threading.Thread(target=target, name="fit", daemon=True)
    thread.start()
    try:
        thread.join()
    except Interrupted as interrupted:
        interrupted.unfinished = thread
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def say_how_to_resume(run_dir: Path, interrupted: Interrupted, *, mpi_ranks: int | None = None) -> None:
    launcher = f"mpiexec -n {mpi_ranks} " if mpi_ranks else ""
    print(f"interrupted ({interrupted}); resume with: {launcher}python -m launch resume {run_dir}",
          file=sys.stderr, flush=True)
