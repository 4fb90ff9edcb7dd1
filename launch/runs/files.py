"""The run directory's files: their names, the one atomic writer, the tolerant readers,
and the `run directory: PATH` line through which a job tells its caller where it writes.

Run directory (absolute path printed at start and end of a job):
  spec.yaml         the resolved spec          ds_config.json   DeepSpeed's config
  metrics.jsonl     one row per logged step and member (written by the recorder)
  summary.json      final figures              checkpoints/     the launcher's checkpoints
  pbt_events.jsonl  every exploit/explore      report.md + PNGs a person's view of it all
  restores.jsonl    (tune backend) what a member held right after each restore

Every JSON file is strict JSON: a non-finite number (a diverged member's NaN or infinite
loss) is written as null (`to_json`), and `read_metrics` reads null back as NaN. A JSON-lines
file only ever gains whole lines (`append_lines`); its readers skip a torn last line, which
runs written before that could hold.
"""
import json
import math
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


def to_json(value, *, indent: int | None = None) -> str:
    """`value` as strict JSON (RFC 8259 has no NaN or Infinity): non-finite floats become null."""
    return json.dumps(_finite_or_none(value), indent=indent, allow_nan=False)


def _finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def append_lines(path: Path, lines: list[str]) -> None:
    """Append `lines` (each without its newline) to a JSON-lines file as whole lines or not
    at all: a write that fails (a full disk) is cut back to where the file ended, so no reader
    ever sees half a line. A file that ends inside a line (an older run's crash) gets a line
    break first, so the new lines stay whole."""
    if not lines:
        return
    data = "".join(line + "\n" for line in lines).encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            os.ftruncate(fd, size)  # frees blocks: works on a full disk
            raise
    finally:
        os.close(fd)


def save_figure(fig, path: Path, *, dpi: int) -> Path:
    """A matplotlib Figure as a PNG, atomically."""
    return write_atomic_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))


def legend_outside(ax, handles=None) -> None:
    """The reports' legend: outside the axes, on the right, so it never covers data."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              fontsize="small", frameon=False)


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


def read_metrics(path: Path, notes: list[str] | None = None) -> list[dict]:
    """The rows of `metrics.jsonl` (read_jsonl), with a null metric read back as the NaN it
    stood for (no metric of a row is ever null otherwise)."""
    return [{key: math.nan if value is None else value for key, value in row.items()}
            for row in read_jsonl(path, notes)]


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
