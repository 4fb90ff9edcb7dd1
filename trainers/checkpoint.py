"""Checkpoint files: written atomically (temp file, fsync, rename), read with
`torch.load(weights_only=True)` so a checkpoint can never execute code, and sealed.

A checkpoint is a folder that every rank writes its files into (rank 0 `model.pt`, rank r
`worker_rank{r}.pt`), and then its seal, `seal_rank{r}.json`: the step, the world size, and
the size and SHA-256 of each file it wrote. The folder is *complete* when every rank's seal
is there and every file it lists has its size; a file is *intact* when its SHA-256 matches.
Completeness does not depend on the order in which files reach the folder (Ray Train copies
a worker's files into storage in no set order and without fsync), so a checkpoint cut short
by a full disk or a crash is never taken for a whole one; its readers (restore, a member's
final weights) skip it. Restore goes from the newest complete checkpoint to older ones until
every rank reads its files intact (`restore_newest`); what it skips is named by file.
"""
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

SEAL = re.compile(r"seal_rank(\d+)\.json")


class CheckpointError(Exception):
    """A checkpoint file that is missing, cut short or corrupt (the message names it)."""


def _write_durably(path: Path, write: Callable) -> None:
    """`write(handle)` into a temporary name, fsync, rename: `path` is whole or absent, and
    no temporary file stays when the write fails (a full disk)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj, path: Path) -> None:
    """torch.save, durably (`_write_durably`)."""
    _write_durably(path, lambda handle: torch.save(obj, handle))


def seal(folder: Path, *, rank: int, world_size: int, step: int, names: Iterable[str]) -> None:
    """Rank `rank`'s seal over the files `names` it wrote into `folder`: written last."""
    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)} for name in names}
    record = json.dumps({"step": step, "world_size": world_size, "files": files}, indent=1) + "\n"
    _write_durably(folder / f"seal_rank{rank}.json", lambda handle: handle.write(record.encode()))


def seals(folder: Path) -> dict[int, dict]:
    """rank -> its seal, for the seals of `folder` that read as one (a torn one does not)."""
    found = {}
    for path in Path(folder).glob("seal_rank*.json"):
        match = SEAL.fullmatch(path.name)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if match and isinstance(record, dict) and isinstance(record.get("files"), dict):
            found[int(match.group(1))] = record
    return found


def incomplete(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint (None: it is)."""
    folder = Path(folder)
    found = seals(folder)
    if not found:
        return f"{folder}: no seal (seal_rank*.json): the checkpoint was cut short"
    world_size = found[min(found)].get("world_size")
    missing = [rank for rank in range(world_size if isinstance(world_size, int) else 0) if rank not in found]
    if missing:
        return f"{folder}: no seal of rank(s) {missing}: the checkpoint was cut short"
    for record in found.values():
        for name, facts in record["files"].items():
            path = folder / name
            if not path.is_file():
                return f"{path}: missing"
            if path.stat().st_size != facts.get("bytes"):
                return f"{path}: {path.stat().st_size} bytes, its seal says {facts.get('bytes')}: cut short"
    return None


def sealed_step(folder: Path) -> int | None:
    """The step of a complete checkpoint, None for an incomplete one."""
    if incomplete(folder) is not None:
        return None
    return int(next(iter(seals(folder).values()))["step"])


def load(path: Path):
    """A checkpoint file, checked against its folder's seal when it has one; CheckpointError
    naming the file if it is missing, cut short, corrupt or unreadable."""
    path = Path(path)
    expected = next((record["files"][path.name] for record in seals(path.parent).values()
                     if path.name in record["files"]), None)
    if expected is not None:
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        if _sha256(path) != expected.get("sha256"):
            raise CheckpointError(f"{path}: corrupt (its SHA-256 differs from its seal's)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reason it cannot be read: name the file
        raise CheckpointError(f"{path}: unreadable ({type(err).__name__}: {err})") from None


def restore_newest(latest: Path, earlier: Callable[[], list[Path]], *, rank: int,
                   all_agree: Callable[[bool], bool], say: Callable[[str], None]) -> tuple[dict, dict]:
    """(model.pt, worker_rank{rank}.pt) of the newest checkpoint, `latest` first, then the
    complete ones `earlier()` lists (newest first), that every rank reads intact:
    `all_agree(ok)` is True when every rank's `ok` is (a collective), so all ranks restore
    the same step. `say`: a line about each checkpoint skipped. CheckpointError naming what
    was wrong when none is intact."""
    problems = []
    candidates = [Path(latest)]
    while candidates:
        folder = candidates.pop(0)
        why = incomplete(folder)
        try:
            if why is not None:
                raise CheckpointError(why)
            state = load(folder / "model.pt")
            worker_state = load(folder / f"worker_rank{rank}.pt")
            why = None
        except CheckpointError as err:
            why = str(err)
        if all_agree(why is None):
            return state, worker_state
        problems.append(why or f"{folder}: another rank could not read its file of it")
        say(f"[restore] skipping the checkpoint {folder}: {problems[-1]}")
        if len(problems) == 1:
            candidates = [Path(f) for f in earlier() if Path(f) != Path(latest)]
    raise CheckpointError("no intact checkpoint to restore from: " + "; ".join(problems))


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
