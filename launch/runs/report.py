"""The run report: `report.md` and its PNG plots, written into the run directory.

The JSON lines are what a script reads; this is what a person reads. `write_report(run_dir)`
reads `spec.yaml`, `summary.json`, `metrics.jsonl` and `pbt_events.jsonl` (each optional)
and writes, every file atomically (a temporary name, then `os.replace`):

- `report.md`: the run at a glance, the plots with captions, the final population table
  (with each member's lineage) and the list of exploits;
- `val_loss.png`: validation (and faint training) loss per member over steps, exploits marked;
- `hyperparams.png`: each hyperparameter that varies, per member over steps (PBT runs only).

It never raises on a run that failed early: missing files and few rows give a shorter report.
"""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

from compression import METHODS
from launch.runs.files import (EVENTS, METRICS, REPORT, SPEC, SUMMARY, legend_outside, read_metrics, save_figure,
                              write_atomic)
from pbt.events import Event, MemberHistory, read_events, replay

VAL_PLOT, HP_PLOT = "val_loss.png", "hyperparams.png"
FIGSIZE, DPI = (8.0, 4.5), 120
MAX_EVENT_ROWS = 40  # the exploits listed in report.md; the rest stay in pbt_events.jsonl
HP_LABELS = {"lr": "base learning rate", "weight_decay": "weight decay", "warmup": "warmup (fraction of steps)",
             "dropout": "dropout probability", "density": "density (fraction sent)"}


# ---------------------------------------------------------------- reading the run


@dataclass
class Run:
    """What the run directory holds; `notes` collects what was missing or unreadable."""

    name: str
    summary: dict
    rows: list[dict]
    events: list[Event]
    members: list[int]
    notes: list[str] = field(default_factory=list)
    inert: frozenset[str] = frozenset()  # hyperparameters that took no effect (density without compression)

    def __post_init__(self):
        self._by_member: dict[int, list[dict]] = {}
        for row in self.rows:
            self._by_member.setdefault(row["member"], []).append(row)
        self._val = {(row["member"], row["step"]): row["val_loss"] for row in self.rows
                     if row.get("val_loss") is not None}

    def member_rows(self, member: int) -> list[dict]:
        return self._by_member.get(member, [])

    def val_at(self, member: int, step: int) -> float | None:
        return self._val.get((member, step))

    def val_losses(self) -> list[float]:
        return list(self._val.values())

    @property
    def last_step(self) -> int:
        return max((row.get("step", 0) for row in self.rows), default=0)


def load_run(run_dir: Path) -> Run:
    notes: list[str] = []
    rows = read_metrics(run_dir / METRICS, notes)
    rows = [row for row in rows if isinstance(row.get("member"), int) and isinstance(row.get("step"), int)]
    events = _read(run_dir / EVENTS, lambda text: read_events(text.splitlines()), (json.JSONDecodeError, TypeError),
                   notes, empty=[], unread="; exploits are not shown")
    if not (run_dir / SUMMARY).exists():
        notes.append("No `summary.json`: the run may still be running, or it stopped before writing one.")
    summary = _read(run_dir / SUMMARY, json.loads, json.JSONDecodeError, notes, empty={})
    members = sorted({row["member"] for row in rows} | {e.target for e in events} | {e.source for e in events})
    spec = _read(run_dir / SPEC, yaml.safe_load, yaml.YAMLError, notes, empty={})
    spec = spec if isinstance(spec, dict) else {}
    name = spec.get("name") or run_dir.name
    return Run(name=str(name), summary=summary, rows=rows, events=events, inert=_inert_hyperparams(spec),
               members=members, notes=notes)


def _read(path: Path, parse, errors, notes: list[str], *, empty, unread: str = ""):
    """`parse` of the file's text; `empty` if it is missing, or if it does not parse (noted
    in `notes`, with `unread`: what the report then leaves out)."""
    if not path.exists():
        return empty
    try:
        return parse(path.read_text())
    except errors as err:
        notes.append(f"`{path.name}` could not be read ({err}){unread}.")
        return empty


def _inert_hyperparams(spec: dict) -> frozenset[str]:
    """The density of a method that sends no density-sized subset (dense, PowerSGD) acts on
    nothing: the report does not list it."""
    if not spec:  # no spec.yaml: unknown, so everything is listed
        return frozenset()
    method = (spec.get("compression") or {}).get("method", "none")
    entry = METHODS.get(method) if isinstance(method, str) else None
    return frozenset() if entry is not None and "density" in entry.reads else frozenset({"density"})


# ---------------------------------------------------------------- population history


def member_histories(run: Run) -> list[MemberHistory]:
    """Each member's hyperparameter schedule and lineage (pbt.events.replay) from the initial
    values in summary.json, else from each member's first metrics row."""
    if not run.members:
        return []
    initial = _initial_hyperparams(run)
    if initial:
        try:
            return replay(run.events, initial)
        except (ValueError, IndexError, KeyError) as err:
            run.notes.append(f"The exploits do not replay from the initial hyperparameters ({err}); "
                             "schedules are taken from the events alone.")
    return replay(run.events, initial, members=max(run.members) + 1, check=False)


def _initial_hyperparams(run: Run) -> dict[str, list[float]]:
    size = max(run.members) + 1
    initial = run.summary.get("initial_hyperparams") or {}
    if initial and all(isinstance(v, list) and len(v) == size for v in initial.values()):
        return {name: [float(x) for x in values] for name, values in initial.items()}
    firsts = {m: (run.member_rows(m) or [{}])[0].get("hyperparams") for m in range(size)}
    if not all(firsts.values()):
        return {}
    names = sorted(set.intersection(*(set(hp) for hp in firsts.values())))
    return {name: [float(firsts[m][name]) for m in range(size)] for name in names}


def lineage(histories: list[MemberHistory], member: int) -> str:
    """Where `member`'s final weights came from, going back in time: "3 <- 1 @100 <- 0 @50"
    means member 3 copied member 1 at step 100, whose weights member 1 had copied from
    member 0 at step 50. A member never exploited is just its number."""
    parts, current, before = [str(member)], member, math.inf
    while True:
        copies = [(step, source) for step, source in histories[current].lineage if step < before]
        if not copies:
            return " <- ".join(parts)
        before, current = copies[-1]
        parts.append(f"{current} @{before}")


def _hp_order(name: str) -> tuple[int, str]:
    return (list(HP_LABELS).index(name) if name in HP_LABELS else len(HP_LABELS), name)


def varying_hyperparams(histories: list[MemberHistory]) -> list[str]:
    """Names whose value differs between members or changes over time."""
    names = sorted({name for h in histories for _, values in h.schedule for name in values})
    varying = []
    for name in names:
        seen = [values[name] for h in histories for _, values in h.schedule if name in values]
        if any(not math.isclose(v, seen[0], rel_tol=1e-9, abs_tol=1e-15) for v in seen):
            varying.append(name)
    return sorted(varying, key=_hp_order)


def _step_function(history: MemberHistory, name: str, last_step: int) -> tuple[list[int], list[float]]:
    xs, ys, value = [], [], math.nan
    for start, values in history.schedule:
        value = values.get(name, value)
        xs.append(start)
        ys.append(value)
    xs.append(max(last_step, xs[-1]))
    ys.append(value)
    return xs, ys


# ---------------------------------------------------------------- plots


def _colors(count: int) -> list:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(count, 1))]


def _width(member: int, members: int, base: float, step: float = 0.6) -> float:
    """Lower-numbered members are drawn wider, so members sharing a value (after a copy,
    or a hyperparameter they all have) show as nested stripes instead of one line."""
    return base + step * max(min(members, 6) - 1 - member, 0)


def plot_losses(run: Run, path: Path) -> str:
    """val_loss.png; returns its caption."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    colors = _colors(max(run.members) + 1)
    has_val = any(row.get("val_loss") is not None for row in run.rows)
    for member in run.members:
        _plot_member_losses(ax, run, member, colors[member], faint=has_val)
    marked = _mark_exploits(ax, run, colors) if has_val else 0
    baseline = run.summary.get("unigram_baseline")
    if baseline is not None:
        ax.axhline(baseline, color="0.4", linestyle=":", linewidth=1.2, label=f"unigram baseline ({baseline:.2f})")
    if has_val:
        _focus_on_validation(ax, run, baseline)
    ax.margins(x=0.06)  # room for the labels of an exploit at the last step
    kind = "validation" if has_val else "training"
    ax.set_title(f"{run.name}: {kind} loss" + (" per member" if len(run.members) > 1 else ""))
    ax.set_xlabel("step")
    ax.set_ylabel(f"{kind} loss (nats/token)")
    ax.grid(alpha=0.3)
    legend_outside(ax, _loss_legend_handles(ax, has_val, marked))
    save_figure(fig, path, dpi=DPI)
    return _loss_caption(run, has_val, marked, baseline)


def _focus_on_validation(ax, run: Run, baseline) -> None:
    """Y limits from the validation losses (and the baseline), not from the first training
    losses, which are far higher and would squash the curves a reader compares."""
    vals = [v for v in run.val_losses() if math.isfinite(v)]
    train = [r["loss"] for r in run.rows if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    if not vals:
        return
    low, high = min(vals + train), max(vals + ([baseline] if baseline is not None else []))
    pad = 0.08 * (high - low) or 0.05
    ax.set_ylim(low - pad, high + pad)


def _plot_member_losses(ax, run: Run, member: int, color, *, faint: bool) -> None:
    rows = run.member_rows(member)
    rows = [r for r in rows if r.get("loss") is not None]
    steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
    if faint:
        ax.plot(steps, losses, color=color, alpha=0.3, linewidth=1.0)
        _plot_val_line(ax, run, member, color)
    else:
        ax.plot(steps, losses, color=color, marker="o", markersize=3, label=f"member {member}",
                linewidth=_width(member, len(run.members), 1.4))


def _plot_val_line(ax, run: Run, member: int, color) -> None:
    """Validation loss; after an exploit the line breaks and goes on from the source's value
    (the dotted arrow of `_mark_exploits` bridges the break)."""
    jumps = {e.step: e.source for e in run.events if e.target == member}
    segments = [[]]
    for row in run.member_rows(member):
        if row.get("val_loss") is None:
            continue
        segments[-1].append((row["step"], row["val_loss"]))
        source_val = run.val_at(jumps[row["step"]], row["step"]) if row["step"] in jumps else None
        if source_val is not None:
            segments.append([(row["step"], source_val)])
    for i, segment in enumerate(segments):
        ax.plot([x for x, _ in segment], [y for _, y in segment], color=color, marker="o", markersize=3.5,
                linewidth=_width(member, len(run.members), 1.4), label=f"member {member}" if i == 0 else None)


def _mark_exploits(ax, run: Run, colors) -> int:
    """× at the target's validation loss just before the copy, a dotted arrow down to the
    source's (which the target inherits), labelled with the source; returns how many."""
    marked = 0
    for event in run.events:
        before, after = run.val_at(event.target, event.step), run.val_at(event.source, event.step)
        if before is None:
            ax.axvline(event.step, color="0.5", linewidth=0.8, alpha=0.5)
            continue
        color = colors[event.target]
        ax.plot([event.step], [before], marker="X", markersize=9, color=color, markeredgecolor="black",
                linestyle="none", zorder=5)
        if after is not None:
            ax.annotate("", xy=(event.step, after), xytext=(event.step, before),
                        arrowprops={"arrowstyle": "-|>", "linestyle": ":", "color": color, "linewidth": 1.2})
        ax.annotate(f"\u2190{event.source}", (event.step, before), xytext=(6, 4), textcoords="offset points",
                    fontsize="small", color="black")
        marked += 1
    return marked


def _loss_legend_handles(ax, has_val: bool, marked: int) -> list:
    from matplotlib.lines import Line2D
    handles, _ = ax.get_legend_handles_labels()
    if has_val:
        handles.append(Line2D([], [], color="0.5", alpha=0.4, label="training loss (faint)"))
    if marked:
        handles.append(Line2D([], [], marker="X", markersize=8, color="0.6", markeredgecolor="black",
                              linestyle="none", label="exploited (\u2190 source)"))
    return handles


def _loss_caption(run: Run, has_val: bool, marked: int, baseline) -> str:
    if has_val:
        text = ("Validation loss per member (bold lines, dots at evaluation steps) and training loss "
                "averaged over each log interval (faint lines, same colours; the axis is fitted to the "
                "validation losses, so early training losses may run off the top).")
    else:
        text = "Training loss per member, averaged over each log interval (no evaluation step was logged)."
    if marked:
        text += (" Each \u00d7 marks a member just before it was exploited, at its validation loss then; "
                 "\u2190k names the member k it copied, and the dotted arrow drops to k's loss, which the "
                 "exploited member inherits with k's weights and from which its line continues.")
    elif run.events:
        text += " Grey vertical lines mark exploits at steps without a validation loss."
    if baseline is not None:
        text += " The dotted grey line is the unigram baseline (the loss of predicting token frequencies)."
    return text


def plot_hyperparams(run: Run, histories: list[MemberHistory], names: list[str], path: Path) -> str:
    """hyperparams.png, one panel per varying hyperparameter; returns its caption."""
    height = max(FIGSIZE[1], 1.0 + 1.9 * len(names))
    fig = Figure(figsize=(FIGSIZE[0], height), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    colors = _colors(len(histories))
    label_jumps = len(run.events) <= 30
    for ax, name in zip(axes, names):
        for member, history in enumerate(histories):
            xs, ys = _step_function(history, name, run.last_step)
            ax.step(xs, ys, where="post", color=colors[member], label=f"member {member}", linewidth=1.6,
                    transform=_dodge(ax, member, len(histories)))
            ax.plot(xs, ys, alpha=0.0)  # shifted lines do not set the axis limits: these do
        _mark_jumps(ax, run.events, name, colors, label_jumps, len(histories))
        if name in LOG_SCALED:
            _log_axis(ax)
        ax.margins(x=0.06, y=0.1)  # a member at the lowest or highest value is not cut by the frame
        ax.set_ylabel(HP_LABELS.get(name, name), fontsize="small")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{run.name}: hyperparameters per member (lineage)")
    axes[-1].set_xlabel("step")
    legend_outside(axes[0], _hp_legend_handles(axes[0], bool(run.events)))
    save_figure(fig, path, dpi=DPI)
    caption = ("Each member's hyperparameters over steps (one panel per hyperparameter that differs between "
               "members or changes; constant ones are listed under the table). Members that share a value are drawn "
               "a hair apart, as parallel lines, so none hides another.")
    if run.events:
        caption += (" Where a member was exploited its line jumps to the new value (the copied member's value, "
                    "perturbed or resampled), marked with a \u25c6" + (" labelled \u2190source" if label_jumps else "")
                    + "; the new value is in force from the step after the jump.")
    logarithmic = [HP_LABELS.get(n, n) for n in names if n in LOG_SCALED]
    if not logarithmic:
        return caption
    return caption + f" The {' and '.join(logarithmic)} {'axes are' if len(logarithmic) > 1 else 'axis is'} logarithmic."


LOG_SCALED = ("lr", "density")  # values spread over decades (0.001, 0.01, 0.1)


def _log_axis(ax) -> None:
    """Log scale labelled 0.0002, 0.0005, 0.001, ... (1-2-5 steps), not only at powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _dodge(ax, member: int, members: int):
    """Data coordinates shifted a couple of points up or down per member, so members that
    share a value draw as a bundle of parallel lines instead of hiding one another."""
    from matplotlib.transforms import offset_copy
    spacing = min(1.8, 9.0 / max(members, 1))
    return offset_copy(ax.transData, fig=ax.figure, x=0.0, y=(member - (members - 1) / 2) * spacing, units="points")


def _mark_jumps(ax, events: list[Event], name: str, colors, label: bool, members: int) -> None:
    for event in events:
        if name not in event.new:
            continue
        ax.plot([event.step], [event.new[name]], marker="D", markersize=6, color=colors[event.target],
                markeredgecolor="black", linestyle="none", zorder=5, transform=_dodge(ax, event.target, members))
        if label:
            ax.annotate(f"\u2190{event.source}", (event.step, event.new[name]), xytext=(7, 4),
                        textcoords="offset points", fontsize="x-small")


def _hp_legend_handles(ax, has_events: bool) -> list:
    from matplotlib.lines import Line2D
    handles, _ = ax.get_legend_handles_labels()
    if has_events:
        handles.append(Line2D([], [], marker="D", markersize=6, color="0.6", markeredgecolor="black",
                              linestyle="none", label="exploited (\u2190 source)"))
    return handles


# ---------------------------------------------------------------- markdown


def _fmt(x, digits: int = 3) -> str:
    """Losses and scores in nats/token: fixed decimals, so a column lines up."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else str(x)


def _fmt_hp(name: str, value: float) -> str:
    return f"{value:.2e}" if name == "lr" else f"{value:.3g}"


def _fmt_bytes(n) -> str:
    if not n:
        return "0 B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def _fmt_duration(seconds) -> str:
    if seconds is None:
        return "n/a"
    minutes, secs = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02.0f}s"
    return f"{minutes}m {secs:04.1f}s" if minutes else f"{secs:.1f} s"


def header(run: Run) -> list[str]:
    s = run.summary
    status = s.get("status", "unknown")
    lines = [f"# Run report: {run.name}", ""]
    if status not in ("completed", "unknown"):
        lines += [f"> **This run did not complete (status: {status}).** The figures below cover what was "
                  "logged before it stopped.", ""]
    tokens_per_s = s.get("tokens_per_s")
    size = f"{len(run.members)} member{'s' if len(run.members) != 1 else ''}"
    if s.get("params_per_member"):
        size += f" of {s['params_per_member']:,} parameters"
    lines += [
        f"- **Status:** {status}; {s.get('steps', run.last_step)} steps; {size}"
        + (f"; {s['world_size']} worker{'s' if s['world_size'] != 1 else ''}" if s.get("world_size") else ""),
        f"- **Time:** wall {_fmt_duration(s.get('wall_time_s'))}, of which training steps "
        f"{_fmt_duration(s.get('train_time_s'))}; "
        + (f"{tokens_per_s:,.0f} tokens/s (all members, training steps only)" if tokens_per_s else "tokens/s n/a"),
        f"- **Validation loss (nats/token):** {_val_line(s)}",
        f"- **Gradient traffic:** {_bytes_line(s)}",
    ]
    if s.get("final_val_accuracy") is not None:
        lines.insert(-1, f"- **Validation accuracy:** {s['final_val_accuracy']:.3f} (best member at the last "
                         "evaluation)")
    return lines


def _val_line(s: dict) -> str:
    final, best, base = s.get("final_val_loss"), s.get("best_val_loss"), s.get("unigram_baseline")
    text = f"final {_fmt(final)} (best member at the last evaluation), best {_fmt(best)} (any member, any step)"
    if base is not None:
        text += f"; unigram baseline {_fmt(base)}"
        if final is not None:
            side = "below" if final <= base else "ABOVE"
            text += f", so the final loss is {_fmt(abs(base - final))} nats/token {side} it"
    return text


def _bytes_line(s: dict) -> str:
    sent, dense, ratio = s.get("bytes_sent_per_worker"), s.get("dense_bytes_per_worker"), s.get("compression_ratio")
    if sent is None:
        return "n/a"
    text = f"{_fmt_bytes(sent)} sent per worker vs {_fmt_bytes(dense)} dense"
    return text + (f" (compression ratio {ratio:g}\u00d7)" if ratio else "")


def population_table(run: Run, histories: list[MemberHistory], varying: list[str]) -> list[str]:
    per_member = run.summary.get("members") or {}
    exploited = {m: sum(e.target == m for e in run.events) for m in run.members}
    lines = ["| member | final val loss | best val loss | times exploited | final hyperparameters | lineage |",
             "|---:|---:|---:|---:|---|---|"]
    for member in run.members:
        info = per_member.get(str(member)) or per_member.get(member) or _member_from_rows(run, member)
        lines.append(f"| {member} | {_fmt(info.get('final_val_loss'))} | {_fmt(info.get('best_val_loss'))} "
                     f"| {exploited[member]} | {_final_hp(run, histories, member, varying)} "
                     f"| {lineage(histories, member) if histories else member} |")
    constant = _constant_hp(histories, varying, run.inert)
    if constant:
        lines += ["", f"Same for every member throughout: {constant}."]
    return lines + _after_last_step(run)


def _after_last_step(run: Run) -> list[str]:
    """Exploits at the last step copied weights that were never trained or evaluated again."""
    late = [e for e in run.events if e.step >= run.last_step]
    if not late:
        return []
    copies = ", ".join(f"member {e.target} \u2190 member {e.source}" for e in late)
    return ["", f"The exploits at step {late[0].step} ({copies}) came after the last training step: those members "
            "now hold their source's weights and new hyperparameters, but their losses above are from before "
            "the copy."]


def _member_from_rows(run: Run, member: int) -> dict:
    vals = [r["val_loss"] for r in run.member_rows(member) if r.get("val_loss") is not None]
    return {"final_val_loss": vals[-1] if vals else None, "best_val_loss": min(vals) if vals else None}


def _final_hp(run: Run, histories: list[MemberHistory], member: int, varying: list[str]) -> str:
    if histories:
        values = histories[member].at(run.last_step)
    else:
        values = (run.member_rows(member) or [{}])[-1].get("hyperparams") or {}
    shown = [n for n in (varying or sorted(values, key=_hp_order)) if n in values and n not in run.inert]
    return ", ".join(f"{n} {_fmt_hp(n, values[n])}" for n in shown) or "n/a"


def _constant_hp(histories: list[MemberHistory], varying: list[str], inert: frozenset[str]) -> str:
    if not histories or not varying:  # nothing varies: the table already shows every value
        return ""
    first = histories[0].schedule[0][1]
    return ", ".join(f"{n} {_fmt_hp(n, first[n])}" for n in sorted(first, key=_hp_order)
                     if n not in varying and n not in inert)


def events_list(events: list[Event], histories: list[MemberHistory]) -> list[str]:
    lines = ["| step | exploit | reason | scores (target / source) | hyperparameters: target's old \u2192 new |",
             "|---:|---|---|---|---|"]
    for e in events[:MAX_EVENT_ROWS]:
        source = histories[e.source].at(e.step) if histories else {}
        changes = ", ".join(_change(e, n, source) for n in e.new if n in e.operations or e.old.get(n) != e.new[n])
        lines.append(f"| {e.step} | member {e.target} \u2190 member {e.source} | {e.reason} "
                     f"| {_fmt(e.target_score)} / {_fmt(e.source_score)} | {changes or 'unchanged'} |")
    if len(events) > MAX_EVENT_ROWS:
        lines += ["", f"... and {len(events) - MAX_EVENT_ROWS} more in `pbt_events.jsonl`."]
    return lines


def _change(e: Event, name: str, source: dict) -> str:
    """"lr 4.00e-03 \u2192 2.40e-03 (source's 2.00e-03 * 1.2)": the operation acts on the source's value."""
    old = _fmt_hp(name, e.old[name]) if name in e.old else "?"
    text = f"{name} {old} \u2192 {_fmt_hp(name, e.new[name])}"
    op = e.operations.get(name)
    if op is None:
        return text + " (copied)"
    if op == "resample":
        return text + " (resampled)"
    if name not in source:
        return text + f" ({op})"
    value = _fmt_hp(name, source[name])
    return text + (f" (source's {value} {op})" if op.startswith("*") else f" ({op} from source's {value})")


# ---------------------------------------------------------------- the report


def write_report(run_dir: Path) -> Path:
    """Write `report.md` and its PNGs into `run_dir`; returns the path of `report.md`."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    if not run.rows:
        return _write_empty(run_dir, run)
    histories = member_histories(run)
    varying = [name for name in varying_hyperparams(histories) if name not in run.inert]
    lines = header(run) + ["", "## Loss", "", f"![validation loss]({VAL_PLOT})", ""]
    lines += [plot_losses(run, run_dir / VAL_PLOT), ""]
    if varying:
        caption = plot_hyperparams(run, histories, varying, run_dir / HP_PLOT)
        lines += ["## Hyperparameters", "", f"![hyperparameters]({HP_PLOT})", "", caption, ""]
    else:
        _remove(run_dir / HP_PLOT)
    lines += ["## Final population", ""] + population_table(run, histories, varying) + ["", _lineage_note(run)]
    if run.events:
        lines += ["", f"## Exploits ({len(run.events)})", ""] + events_list(run.events, histories)
    return _write_md(run_dir, lines + _notes(run))


def _lineage_note(run: Run) -> str:
    if not run.events:
        return "No member was exploited: each member's weights are its own (lineage is its own number)."
    return ("Lineage reads back in time: `3 <- 1 @100 <- 0 @50` means member 3's weights were copied from "
            "member 1 at step 100, and member 1's from member 0 at step 50. \"Times exploited\" counts the "
            "copies a member received (each replaced its weights and hyperparameters).")


def _write_empty(run_dir: Path, run: Run) -> Path:
    for name in (VAL_PLOT, HP_PLOT):
        _remove(run_dir / name)
    path = run_dir / METRICS
    why = "is missing" if not path.exists() else "has no metric rows"
    lines = header(run) + ["", f"**No metrics: `metrics.jsonl` {why}**, so there is nothing to plot. "
                           "The run stopped (or is still starting) before its first logged step."]
    return _write_md(run_dir, lines + _notes(run))


def _notes(run: Run) -> list[str]:
    return ["", "## Notes", ""] + [f"- {note}" for note in run.notes] if run.notes else []


def _write_md(run_dir: Path, lines: list[str]) -> Path:
    return write_atomic(run_dir / REPORT, "\n".join(lines).rstrip() + "\n")


def _remove(path: Path) -> None:
    """A stale plot from an earlier report would contradict this one."""
    path.unlink(missing_ok=True)
