"""Spec problems: each names a dotted key path and what was expected.

All problems are collected and reported together, so a user fixes a spec in one pass.
"""
import difflib
import sys
from dataclasses import dataclass

MAX_PATH = 200  # a key path is built from the user's keys, which may be any length


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        path = self.path if len(self.path) <= MAX_PATH else self.path[:MAX_PATH] + "..."
        return f"{path}: {self.message}"


class SpecError(Exception):
    """Bad input: the CLI prints it and exits with status 2, before any work starts."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def report_spec_error(err: SpecError, spec_path: str) -> int:
    """Print every problem of a spec; returns the exit status for bad input (2)."""
    count = len(err.problems)
    print(f"error: {spec_path}: {count} problem{'s' if count > 1 else ''}; nothing was started", file=sys.stderr)
    for problem in err.problems:
        print(f"  {problem}", file=sys.stderr)
    return 2
