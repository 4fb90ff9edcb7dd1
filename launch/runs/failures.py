"""The failures of a run's worker groups, and when restarting them must stop.

Ray Train restarts a failed worker group from its last checkpoint, up to run.max_failures
times (-1: without end). A failure that a restart cannot cure would then loop forever, so
the run stops, with that failure as its error, when:

- the same failure happens for the REPEATS_TO_STOP-th time: the same rank, the same step
  (0: before the first step, as in a restore; None: the worker was not even built), the same error type and the same
  message (for an OSError its errno, not the file name: Ray names each checkpoint folder
  by the time). A deterministic bug at step 57 stops at the third attempt that reaches
  step 57; a worker lost to a flaky node fails elsewhere;
- at once, when a write runs out of space or quota or meets a read-only file system, and
  whenever the recorder cannot write the run directory: a run directory that cannot take
  the results is not cured by retrying.
"""
import errno
from collections import Counter
from dataclasses import asdict, dataclass

REPEATS_TO_STOP = 3
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
KEPT = 20  # failures listed in summary.json; the count covers them all


@dataclass(frozen=True)
class Failure:
    """One error that ended a worker (rank) or the recorder (rank None) at `step`."""

    rank: int | None
    step: int | None
    error_type: str
    message: str
    errno: int | None = None

    @classmethod
    def of(cls, err: BaseException, *, rank: int | None, step: int | None) -> "Failure":
        code = err.errno if isinstance(err, OSError) else None
        return cls(rank, step, type(err).__name__, str(err), code)

    def signature(self) -> tuple:
        """What makes two failures "the same". The rank counts, so that an error every rank
        hits (a corrupt checkpoint) counts once per attempt."""
        return self.rank, self.step, self.error_type, self.message if self.errno is None else self.errno

    def describe(self) -> str:
        where = "the recorder" if self.rank is None else f"rank {self.rank}"
        when = "while starting" if self.step is None else f"at step {self.step}"
        return f"{where} {when}: {self.error_type}: {self.message}"


class FailureHistory:
    """Every failure recorded in a run, and the reason to stop restarting, once there is one."""

    def __init__(self):
        self.failures: list[Failure] = []
        self.stop_reason: str | None = None

    def record(self, failure: Failure) -> str | None:
        """Add `failure`; returns the reason to stop restarting (None: a restart may cure it)."""
        self.failures.append(failure)
        if self.stop_reason is None:
            if failure.rank is None or failure.errno in STORAGE_ERRNOS:
                self.stop_reason = f"{failure.describe()} (the run directory cannot be written; not retried)"
            else:
                seen = sum(earlier.signature() == failure.signature() for earlier in self.failures)
                if seen >= REPEATS_TO_STOP:
                    self.stop_reason = (f"{failure.describe()} (the same failure {seen} times: "
                                        "restarting from the checkpoint does not cure it)")
        return self.stop_reason

    def error(self) -> str | None:
        """The run's error as far as the failures tell: why it stopped, else the most frequent
        failure, the earliest on a tie (a rank's error comes before the other ranks' errors
        about losing it)."""
        if self.stop_reason is not None:
            return self.stop_reason
        if not self.failures:
            return None
        counts = Counter(failure.signature() for failure in self.failures)
        return max(self.failures, key=lambda failure: counts[failure.signature()]).describe()

    def summary(self) -> dict:
        return {"count": len(self.failures), "last": [asdict(f) for f in self.failures[-KEPT:]]}
