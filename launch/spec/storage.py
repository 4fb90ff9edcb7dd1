"""`run.storage` and `name`: where a job's run directory will go, checked at validation
without creating anything, so that a job whose directory cannot be made is refused before
Ray (or anything else) starts.

A run directory is `<run.storage>/<name>-<YYYYmmdd-HHMMSS>[-n]` and a sweep's study
directory `<run.storage>/<name>-sweep-<YYYYmmdd-HHMMSS>[-n]` (launch/runs/files.py,
fresh_dir), so the name must leave room for that suffix within the file system's limit
on one file name (NAME_MAX, 255 bytes on the usual ones).
"""
import os
from pathlib import Path

from compression.spec_types import shorten
from launch.spec.problems import Problem

LONGEST_SUFFIX = len("-sweep-20250101-120000-999")
PATH_ROOM = 1024  # what Ray's and our files add below a run directory, at most


def storage_problems(storage: str, name: str) -> list[Problem]:
    """What stops a run directory named after `name` from being created under `storage`."""
    if "\0" in storage:
        return [Problem("run.storage", f"{shorten(storage)} holds a NUL character, which no path may contain")]
    path = Path(os.path.expanduser(storage)).absolute()
    existing = next(p for p in (path, *path.parents) if _exists(p))
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        return [Problem("run.storage", f"{shorten(str(path))} {what}; run directories go into a directory: "
                                       "set run.storage to a directory path")]
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created: {existing} is not writable"
        return [Problem("run.storage", f"{shorten(str(path))} {what} (a read-only file system, or no "
                                       "permission); set run.storage to a directory you can write to")]
    name_max = _limit(existing, "PC_NAME_MAX", 255)
    problems = [Problem("run.storage", f"{shorten(part)} is {len(part.encode())} bytes long, over the {name_max} "
                                       "a file name may have here; shorten it")
                for part in path.relative_to(existing).parts if len(part.encode()) > name_max]
    room = name_max - LONGEST_SUFFIX
    if len(name.encode()) > room:
        problems.append(Problem("name", f"{len(name.encode())} bytes long; with the time stamp a run directory "
                                        f"adds (e.g. {LONGEST_SUFFIX} bytes for '-sweep-20250101-120000-999') it is "
                                        f"over the {name_max} a file name may have here: shorten name to at most "
                                        f"{room} characters"))
    path_max = _limit(existing, "PC_PATH_MAX", 4096)
    if len(str(path).encode()) + 1 + name_max + PATH_ROOM > path_max:
        problems.append(Problem("run.storage", f"{shorten(str(path))} is too long a path: what a run writes "
                                               f"below it would pass the {path_max} bytes a path may have; "
                                               "choose a shorter one"))
    return problems


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long to look up: reported as such by the caller
        return False


def _limit(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default
