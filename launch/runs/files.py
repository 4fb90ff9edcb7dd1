"""The run directory's files: their names, the one atomic writer, the tolerant readers,
and the `run directory: PATH` line through which a job tells its caller where it writes.

Run directory (absolute path printed at start and end of a job):
  spec.yaml         the resolved spec          ds_config.json   DeepSpeed's config
  metrics.jsonl     one row per logged step and member (written by the recorder)
  summary.json      final figures              checkpoints/     the launcher's checkpoints
  pbt_events.jsonl  every exploit/explore      report.md + PNGs a person's view of it all
  restores.jsonl    (tune backend) what a member held right after each restore
"""
import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

SPEC, DS_CONFIG, SUMMARY = "spec.yaml", "ds_config.json", "summary.json"
METRICS, EVENTS, RESTORES = "metrics.jsonl", "pbt_events.jsonl", "restores.jsonl"
REPORT = "report.md"
RUN_DIR_PREFIX = "run directory: "
_RUN_DIR_LINE = re.compile(rf"{RUN_DIR_PREFIX}(\S+)")


def write_atomic_with(path: Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` writes the file under a temporary name beside `path`, which then
    replaces `path` in one step: a reader never sees half a file, a crash leaves the old one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_atomic(path: Path, text: str) -> Path:
    return write_atomic_with(path, lambda tmp: tmp.write_text(text))


def save_figure(fig, path: Path, *, dpi: int) -> Path:
    """A matplotlib Figure as a PNG, atomically."""
    return write_atomic_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))


def read_jsonl(path: Path, notes: list[str] | None = None) -> list[dict]:
    """The JSON objects of a JSON-lines file ([] if it is missing). Unreadable lines (a
    last line cut short by a crash) are skipped, and counted in `notes` if given."""
    path = Path(path)
    if not path.exists():
        return []
    rows, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad and notes is not None:
        notes.append(f"{bad} unreadable line(s) in `{path.name}` were skipped.")
    return rows


def read_json(path: Path) -> dict:
    """A JSON object, or {} if the file is missing or unreadable."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def announce_run_dir(run_dir: Path, indent: str = "") -> None:
    print(f"{indent}{RUN_DIR_PREFIX}{run_dir}", flush=True)


def run_dir_in(text: str) -> Path | None:
    """The run directory a job announced in its output (the first such line), or None."""
    match = _RUN_DIR_LINE.search(text)
    return Path(match.group(1)) if match else None


def fresh_dir(parent: Path, prefix: str) -> Path:
    """A new directory `parent/prefix-<time stamp>[-n]` (never one another job created)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        path = parent / (f"{prefix}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh directory under {parent}")
