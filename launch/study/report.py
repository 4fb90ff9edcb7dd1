"""The study report of a compression sweep: `report.md` and PNGs in the study directory.

`write_study_report(study_dir)` reads `results.csv` (one row per trial, written by
launch/study/sweep.py), each trial's `metrics.jsonl` and `summary.json` (in its run directory),
and `study.json` (the dropped duplicates), and writes, every file atomically:

- `val_loss_vs_step.png`   validation loss over steps, one line per trial;
- `val_loss_vs_mb.png`     validation loss over cumulative MB one worker sent: the tradeoff curve;
- `final_loss_vs_density.png`  final validation loss against density, per method (dense at 1);
- `step_time.png`          measured time per training step, per trial;
- `projection.png`         projected step time on W workers at 1/10/100 Gbit/s (launch/study/netmodel.py);
- `report.md`              all of it with captions, the results table and the projection tables.

Trials share one style in every plot: colour family by method (dense black, top-k blue,
shared random-k orange, independent random-k green, PowerSGD purple; darker = sparser,
i.e. lower density or lower rank), dashed without error feedback, marker by worker count.
PowerSGD has a rank, not a density: where a plot needs a fraction sent, its point sits at
the bytes it sent over the dense bytes, labelled with its rank. Re-run with `python -m launch report STUDY_DIR`.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

from compression import METHODS
from launch.runs.files import METRICS, SUMMARY, legend_outside, read_json, read_metrics, save_figure, write_atomic
from launch.study.netmodel import (DEFAULT_BANDWIDTHS_GBPS, DEFAULT_LATENCY_S, DEFAULT_WORKERS, MethodRow,
                                   Projection, collective_for, project)

VAL_STEP, VAL_MB, DENSITY, STEP_TIME, PROJECTION = (
    "val_loss_vs_step.png", "val_loss_vs_mb.png", "final_loss_vs_density.png", "step_time.png", "projection.png")
FIGSIZE, DPI = (8.0, 4.5), 120
# A compressed configuration "keeps quality" when its final validation loss is at most this
# much above the dense run's at the same worker count (nats/token).
QUALITY_TOLERANCE = 0.02
FAMILY = {("none", ""): "Greys", ("topk", ""): "Blues", ("randomk", "shared"): "Oranges",
          ("randomk", "independent"): "Greens", ("powersgd", ""): "Purples"}
MARKERS = ["o", "s", "^", "D", "v", "P"]


# ---------------------------------------------------------------- reading the study


@dataclass
class TrialData:
    row: dict  # results.csv, typed
    steps: list[int] = field(default_factory=list)  # evaluation steps
    val: list[float] = field(default_factory=list)  # validation loss there (best member)
    mb: list[float] = field(default_factory=list)  # MB one worker had sent by then (all members)

    @property
    def label(self) -> str:
        return self.row["trial"]

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "completed"


@dataclass
class Study:
    name: str
    trials: list[TrialData]
    dropped: list[dict]
    baseline: float | None
    notes: list[str] = field(default_factory=list)


def _typed(value: str):
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def read_results(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: _typed(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _run_dir(study_dir: Path, recorded) -> Path | None:
    """The run directory as recorded, or under this study's runs/ if the study was moved."""
    if not recorded:
        return None
    path = Path(recorded)
    if path.exists():
        return path
    moved = study_dir / "runs" / path.name
    return moved if moved.exists() else None


def _curve(run_dir: Path | None, notes: list[str], label: str) -> tuple[list[int], list[float], list[float]]:
    if run_dir is None:
        return [], [], []
    by_step: dict[int, list[dict]] = {}
    read_notes: list[str] = []
    for row in read_metrics(run_dir / METRICS, read_notes):
        if isinstance(row.get("step"), int) and row.get("val_loss") is not None:
            by_step.setdefault(row["step"], []).append(row)
    notes += [f"{label}: {note}" for note in read_notes]
    steps = sorted(by_step)
    # Several members: the best member's loss; bytes are what the worker sent for all of them.
    val = [min(r["val_loss"] for r in by_step[s]) for s in steps]
    mb = [sum(r.get("bytes_sent_total", 0) for r in by_step[s]) / 1e6 for s in steps]
    return steps, val, mb


def load_study(study_dir: Path) -> Study:
    study_dir = Path(study_dir)
    notes: list[str] = []
    rows = read_results(study_dir / "results.csv")
    info = read_json(study_dir / "study.json")
    if not info and (study_dir / "study.json").exists():
        notes.append("`study.json` could not be read; dropped duplicates are not listed.")
    trials, baseline = [], None
    for row in rows:
        run_dir = _run_dir(study_dir, row.get("run_dir"))
        steps, val, mb = _curve(run_dir, notes, row["trial"])
        trials.append(TrialData(row, steps, val, mb))
        if baseline is None and run_dir is not None:
            baseline = read_json(run_dir / SUMMARY).get("unigram_baseline")
    return Study(name=info.get("name") or study_dir.name, trials=trials, dropped=info.get("dropped", []),
                 baseline=baseline, notes=notes)


# ---------------------------------------------------------------- style


def _family(row: dict) -> tuple[str, str]:
    if row["method"] == "randomk":
        return ("randomk", row.get("randomk_mode") or "shared")
    return (row["method"], "")


def _by_rank(row: dict) -> bool:
    """Whether the method's size is a rank, not a density (PowerSGD's)."""
    return "rank" in METHODS[row["method"]].reads


def _level(row: dict) -> float:
    """How much a configuration sends, for shading and ordering: its density, or for
    PowerSGD its rank (higher = more sent, lighter)."""
    return row["rank"] if _by_rank(row) else row["density"]


def _fraction_sent(row: dict) -> float | None:
    """The x of the final-loss plot: the density, or for PowerSGD (no density) the bytes
    one worker sent per step over the dense fp32 bytes."""
    if not _by_rank(row):
        return row["density"]
    sent, dense = row.get("payload_bytes_per_step"), row.get("dense_bytes_per_step")
    return sent / dense if sent and dense else None


def styles(trials: list[TrialData]) -> dict[str, dict]:
    """Colour by method family and density (darker = sparser), dashes without error
    feedback, marker by worker count; the same for a trial in every plot."""
    from matplotlib import colormaps

    workers = sorted({t.row["workers"] for t in trials})
    out = {}
    for fam in {_family(t.row) for t in trials}:
        members = [t for t in trials if _family(t.row) == fam]
        levels = sorted({_level(t.row) for t in members}, reverse=True)
        cmap = colormaps[FAMILY.get(fam, "Greys")]
        for t in members:
            i = levels.index(_level(t.row))
            shade = 0.55 + 0.4 * (i / max(len(levels) - 1, 1))
            color = "black" if fam[0] == "none" else cmap(shade)
            out[t.label] = {"color": color, "linestyle": "--" if t.row.get("error_feedback") is False else "-",
                            "marker": MARKERS[workers.index(t.row["workers"]) % len(MARKERS)]}
    return out


def _focus(ax, values: list[float], baseline: float | None) -> None:
    """Y limits from the validation losses after the first evaluation (the first ones are
    far higher and would squash the differences a reader compares)."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return
    low = finite[0]
    high = finite[min(len(finite) - 1, int(0.9 * len(finite)))]
    if baseline is not None:
        high = max(high, baseline)
    pad = 0.08 * (high - low) or 0.05
    ax.set_ylim(low - pad, high + pad)


# ---------------------------------------------------------------- plots


def _axes(figsize: tuple[float, float] = FIGSIZE) -> tuple[Figure, object]:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _finish(fig: Figure, ax, path: Path, which: str = "major") -> None:
    """A light grid, the legend outside the axes, the PNG written atomically."""
    ax.grid(alpha=0.3, which=which)
    legend_outside(ax)
    save_figure(fig, path, dpi=DPI)


def plot_val_vs_step(study: Study, style: dict, path: Path) -> str:
    fig, ax = _axes()
    for t in study.trials:
        if t.steps:
            ax.plot(t.steps, t.val, label=t.label, markersize=3.5, linewidth=1.5, **style[t.label])
    if study.baseline is not None:
        ax.axhline(study.baseline, color="0.4", linestyle=":", linewidth=1.2,
                   label=f"unigram baseline ({study.baseline:.2f})")
    _focus(ax, [v for t in study.trials for v in t.val], study.baseline)
    ax.set(title=f"{study.name}: validation loss per trial", xlabel="step",
           ylabel="validation loss (nats/token)")
    _finish(fig, ax, path)
    return ("Validation loss at every evaluation step, one line per trial (colour: method and density, darker = "
            "sparser; dashed: without error feedback; marker: worker count). The axis is fitted to the later "
            "evaluations; the first ones may run off the top.")


def plot_val_vs_mb(study: Study, style: dict, path: Path) -> str:
    fig, ax = _axes()
    for t in study.trials:
        points = [(m, v) for m, v in zip(t.mb, t.val) if m > 0]
        if points:
            ax.plot([m for m, _ in points], [v for _, v in points], label=t.label, markersize=3.5, linewidth=1.5,
                    **style[t.label])
    ax.set_xscale("log")
    _focus(ax, [v for t in study.trials for v in t.val], study.baseline)
    ax.set(title=f"{study.name}: validation loss vs data sent (the tradeoff curve)",
           xlabel="cumulative MB sent by one worker (log scale)", ylabel="validation loss (nats/token)")
    _finish(fig, ax, path, which="both")
    return ("Validation loss against the megabytes one worker had put on the wire by that step (exact payloads: "
            "values in their wire dtype plus int32 indices where indices travel; dense warm-up steps included; a "
            "1-worker run counts what it would send). Further left at the same height is better: the same quality "
            "for fewer bytes.")


def plot_final_vs_density(study: Study, style: dict, path: Path) -> str:
    fig, ax = _axes()
    done = [t for t in study.trials if t.row.get("final_val_loss") is not None and _fraction_sent(t.row)]
    groups: dict[tuple, list[TrialData]] = {}
    for t in done:
        r = t.row
        groups.setdefault((r["method"], r.get("randomk_mode"), r.get("error_feedback"), r["workers"],
                           r.get("value_dtype")), []).append(t)
    many_workers = len({t.row["workers"] for t in done}) > 1
    for key, members in groups.items():
        members.sort(key=lambda t: _fraction_sent(t.row))
        method, mode, ef, workers, dtype = key
        first = style[members[0].label]
        name = METHODS[method].label + (f" {mode}" if mode else "")
        if method == "none":
            ax.axhline(members[0].row["final_val_loss"], color="black", linestyle=":", linewidth=1.0, alpha=0.7)
        else:
            name += "" if ef is None else (" + EF" if ef else ", no EF")
            name += "" if dtype in (None, "fp32") else f", {dtype}"
        name += f", W={workers}" if many_workers else ""
        xs, ys = [_fraction_sent(t.row) for t in members], [t.row["final_val_loss"] for t in members]
        ax.plot(xs, ys, label=name, color=first["color"], linestyle=first["linestyle"], marker=first["marker"],
                markersize=6, linewidth=1.6)
        if _by_rank(members[0].row):
            for t, x, y in zip(members, xs, ys):
                ax.annotate(f"r{t.row['rank']}", (x, y), xytext=(4, 4), textcoords="offset points",
                            fontsize="small", color=first["color"])
    ax.set_xscale("log")
    ax.set(title=f"{study.name}: final validation loss vs density", xlabel="density (fraction of coordinates "
           "sent, log scale; dense = 1; PowerSGD: bytes sent / dense bytes)",
           ylabel="final validation loss (nats/token)")
    ax.margins(x=0.08, y=0.12)
    _finish(fig, ax, path, which="both")
    return ("Final validation loss of each trial against its density, one line per method (and error-feedback "
            "setting); dense training is the point at density 1, with a dotted line across for comparison. "
            "PowerSGD has a rank instead (labelled r1, r2, ...): its points sit at the bytes it sent per step "
            "over the dense bytes, so further left is fewer bytes for every method alike (top-k sends an "
            "int32 index with each value: its bytes are twice its density in fp32).")


def plot_step_time(study: Study, style: dict, path: Path) -> str:
    timed = [t for t in study.trials if t.row.get("step_time_s")]
    order = {m: i for i, m in enumerate(METHODS)}
    timed.sort(key=lambda t: (order.get(t.row["method"], 9), t.row.get("randomk_mode") or "",
                              -_level(t.row), t.row["workers"], t.label))
    fig, ax = _axes((FIGSIZE[0], max(2.5, 0.9 + 0.32 * len(timed))))
    ys = list(range(len(timed)))[::-1]
    ms = [1000 * t.row["step_time_s"] for t in timed]
    fastest = [1000 * t.row["step_time_min_s"] if t.row.get("step_time_min_s") else None for t in timed]
    for y, t, value, low in zip(ys, timed, ms, fastest):
        s = style[t.label]
        ax.barh(y, value, color=s["color"], edgecolor="black", linewidth=0.6,
                hatch="//" if s["linestyle"] == "--" else None)
        text = f"{value:.1f} ms"
        if low is not None:
            ax.plot([low], [y], marker="|", markersize=14, markeredgewidth=2.5, color="white", zorder=4)
            ax.plot([low], [y], marker="|", markersize=12, markeredgewidth=1.5, color="black", zorder=5)
            text += f" (fastest {low:.1f})"
        ax.annotate(text, (value, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize="small")
    ax.set_yticks(ys, [t.label for t in timed], fontsize="small")
    ax.set_xlim(0, 1.35 * max(ms, default=1))
    ax.set(title=f"{study.name}: measured time per training step", xlabel="ms per step")
    ax.grid(alpha=0.3, axis="x")
    save_figure(fig, path, dpi=DPI)
    return ("Time per training step as measured on this machine (forward, backward, compression with error "
            "feedback, the exchange over local sockets, optimizer; evaluation and start-up excluded), grouped by "
            "method. Bars: the mean over the run (train_time_s / steps); black ticks: the fastest log interval, "
            "the one least disturbed by other load on the machine (a large gap between the two means the machine "
            "was busy). Hatched: without error feedback.")


def plot_projection(projection: Projection, colors: dict[str, dict], path: Path) -> str:
    bws = projection.bandwidths_gbps
    fig = Figure(figsize=(10.0, 4.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(bws), sharey=True, squeeze=False)[0]
    for ax, bw in zip(axes, bws):
        for row in projection.rows:
            ys = [1000 * projection.cell(W, bw).step_s[row.name] for W in projection.workers]
            s = colors[row.name]
            ax.plot(projection.workers, ys, color=s["color"], linestyle=s["linestyle"], marker="o", markersize=4,
                    linewidth=1.5, label=row.name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(projection.workers, [str(w) for w in projection.workers])
        _log_y(ax)
        ax.set_title(f"{bw:g} Gbit/s", fontsize="medium")
        ax.set_xlabel("workers W")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("projected ms per step (log)")
    fig.suptitle("Projected step time: measured compute + modelled exchange", fontsize="medium")
    legend_outside(axes[-1])
    save_figure(fig, path, dpi=DPI)
    return ("Projected time per step at W workers and three link bandwidths: the measured compute time of each "
            "configuration plus the network model's time for its exact payload (ring all-reduce for dense and "
            "shared random-k, ring all-gather for top-k, two ring all-reduces for PowerSGD), "
            f"latency α = {projection.latency_s * 1e6:g} µs per message. Lower is faster; compute is flat in W, so the rising part is communication.")


def _log_y(ax) -> None:
    """Log scale labelled in plain numbers (1, 2, 5, 10, 20, ...; more labels when the range
    is narrow), not as powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(4.0, 6.0, 8.0, 9.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    low, high = ax.get_ylim()
    narrow = high / low < 4 if low > 0 else False
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}") if narrow else NullFormatter())


# ---------------------------------------------------------------- the projection


@dataclass(frozen=True)
class ConfigInput:
    """What the projection knows about one configuration (trials that differ only in W)."""

    row: MethodRow
    source: str  # where compute_s comes from
    collective: str
    final_val_loss: float | None
    at_workers: int  # the W whose final loss is quoted


def _compute_time(row: dict) -> float | None:
    """Seconds per step of the fastest log interval (a dedicated cluster node is not shared
    with other work; on a busy machine the mean carries everyone else's load), else the mean."""
    return row.get("step_time_min_s") or row.get("step_time_s")


def projection_inputs(study: Study) -> list[ConfigInput]:
    """Per configuration (trials differing only in W): compute time = the fastest log
    interval of any of its trials. Every measured step contains the compute and, with W > 1,
    an exchange over local sockets too, so each is an upper bound on compute and the smallest
    is the tightest; a 1-worker trial (no network at all) usually gives it. Payload = the
    exact bytes one worker sent per step."""
    by_config: dict[str, list[TrialData]] = {}
    for t in study.trials:
        if t.ok and _compute_time(t.row) and t.row.get("payload_bytes_per_step") is not None:
            by_config.setdefault(t.row.get("config") or t.label, []).append(t)
    inputs = []
    for config, trials in by_config.items():
        timing = min(trials, key=lambda t: (_compute_time(t.row), t.row["workers"]))
        W = timing.row["workers"]
        fastest = "fastest interval" if timing.row.get("step_time_min_s") else "mean"
        source = f"{fastest} of the W={W} run" + (" (no network)" if W == 1 else " (includes its local exchange)")
        r = max(trials, key=lambda t: t.row["workers"]).row  # the loss quoted: at the largest W measured
        mode = r.get("randomk_mode") or "shared"
        method_row = MethodRow(config, r["method"], _compute_time(timing.row), r["payload_bytes_per_step"],
                               randomk_mode=mode, density=r["density"], final_val_loss=r.get("final_val_loss"))
        inputs.append(ConfigInput(method_row, source, collective_for(r["method"], mode), r.get("final_val_loss"),
                                  r["workers"]))
    return inputs


def quality_ok(inputs: list[ConfigInput]) -> dict[str, bool | None]:
    """Whether each configuration's final loss is within QUALITY_TOLERANCE of the dense
    configuration's at the same W (None when there is no dense run to compare with)."""
    dense = {i.at_workers: i.final_val_loss for i in inputs if i.row.method == "none" and i.final_val_loss}
    out = {}
    for i in inputs:
        ref = dense.get(i.at_workers)
        out[i.row.name] = None if ref is None or i.final_val_loss is None else (
            i.final_val_loss <= ref + QUALITY_TOLERANCE)
    return out


# ---------------------------------------------------------------- report.md


def _fmt(value, spec: str = ".4f", none: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return none
    return format(value, spec)


def _results_table(study: Study) -> list[str]:
    lines = ["| trial | status | method | density (rank) | EF | W | final val | best val | MB sent / worker | ratio | "
             "ms / step (fastest) | tokens/s | wall s |", "|" + "---|" * 13]
    for t in study.trials:
        r = t.row
        ef = "" if r.get("error_feedback") is None else ("on" if r["error_feedback"] else "off")
        method = r["method"] + (f" ({r['randomk_mode']})" if r.get("randomk_mode") else "")
        fastest = f" ({1000 * r['step_time_min_s']:.1f})" if r.get("step_time_min_s") else ""
        lines.append(
            f"| {t.label} | {r.get('status')} | {method} | {_density_or_rank(r)} | {ef} | {r['workers']} | "
            f"{_fmt(r.get('final_val_loss'))} | {_fmt(r.get('best_val_loss'))} | "
            f"{_fmt(r.get('mb_sent_per_worker'), '.2f')} | {_fmt(r.get('compression_ratio'), '.1f')} | "
            f"{_fmt(1000 * r['step_time_s'] if r.get('step_time_s') else None, '.1f')}{fastest} | "
            f"{_fmt(r.get('tokens_per_s'), ',.0f')} | {_fmt(r.get('wall_time_s'), '.1f')} |")
    return lines


def _density_or_rank(row: dict) -> str:
    return f"(rank {row['rank']})" if _by_rank(row) else _fmt(row.get("density"), "g")


def _projection_section(study: Study, inputs: list[ConfigInput], projection: Projection, caption: str) -> list[str]:
    ok = quality_ok(inputs)
    lat = projection.latency_s
    lines = [
        "## Projection to a cluster", "",
        "A simple network model (`launch/study/netmodel.py`), for W workers on links of β Gbit/s "
        f"(β·10⁹/8 bytes/s) with α = {lat * 1e6:g} µs per message, and S the exact bytes one worker sends per step:",
        "",
        "- ring all-reduce (dense; shared random-k, whose workers send values for the same coordinates): "
        "`T = 2(W-1)/W · S/β + 2(W-1)·α` (reduce-scatter then all-gather, W-1 rounds each, one message per round);",
        "- ring all-gather (top-k; independent random-k: values + int32 indices, W payloads, not summed): "
        "`T = (W-1) · S/β + (W-1)·α`;",
        "- two ring all-reduces (PowerSGD: the P factors with the dense 1-D tensors, then the Q factors, which "
        "need the reduced P): `T = 2(W-1)/W · S/β + 4(W-1)·α`, S the bytes of both;",
        "- projected step time = measured compute time + T (no overlap; the ring's latency term is pessimistic "
        "at large W, where libraries use trees).", "",
        "**Compute time used.** Per configuration, the fastest log interval (`step_time_min_s` in `results.csv`) "
        "of any of its trials: every measured step holds the compute (forward, backward, compression with error "
        "feedback, optimizer) and, with more than one worker, an exchange over local sockets, so each is an upper "
        "bound on compute and the smallest is the tightest; a 1-worker trial has no network at all. The fastest "
        "interval rather than the mean, because a cluster node runs nothing else while the mean carries whatever "
        "else this machine was doing. Compute differs between methods only by compression's own cost, so larger "
        "differences between configurations are measurement noise; the second winner in the last table removes "
        "them. Per configuration:", "",
        "| configuration | collective | payload bytes / step / worker | compute ms / step | compute from | "
        f"final val (W) | within {QUALITY_TOLERANCE} of dense |", "|---|---|---|---|---|---|---|"]
    for i in inputs:
        quality = {True: "yes", False: "no", None: "n/a"}[ok[i.row.name]]
        lines.append(f"| {i.row.name} | {i.collective} | {i.row.payload_bytes:,.0f} | "
                     f"{1000 * i.row.compute_s:.2f} | {i.source} | {_fmt(i.final_val_loss)} ({i.at_workers}) | "
                     f"{quality} |")
    lines += ["", f"![projection]({PROJECTION})", "", caption, ""]
    for bw in projection.bandwidths_gbps:
        lines += [f"**{bw:g} Gbit/s**: projected ms per step (fastest in bold)", "",
                  "| configuration | " + " | ".join(f"W={W}" for W in projection.workers) + " |",
                  "|---|" + "---:|" * len(projection.workers)]
        for row in projection.rows:
            cells = []
            for W in projection.workers:
                cell = projection.cell(W, bw)
                text = f"{1000 * cell.step_s[row.name]:.2f}"
                cells.append(f"**{text}**" if cell.winner == row.name else text)
            lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
        lines.append("")
    dense = [i.row.compute_s for i in inputs if i.row.method == "none"]
    common = dense[0] if dense else min(i.row.compute_s for i in inputs)
    equal = project([dataclasses.replace(r, compute_s=common) for r in projection.rows],
                    workers=projection.workers, bandwidths_gbps=projection.bandwidths_gbps, latency_s=lat)
    eligible = [r.name for r in projection.rows if ok[r.name]]
    compressed_ok = [n for n in eligible if n not in {i.row.name for i in inputs if i.row.method == "none"}]
    lines += [
        "**Who wins where.** Per cell: the fastest configuration with its measured compute; after the slash, "
        f"the fastest if every configuration had the same compute ({1000 * common:.2f} ms, the "
        f"{'dense' if dense else 'fastest'} configuration's), so that communication alone decides"
        + (f"; in brackets, the fastest among those whose final validation loss is within {QUALITY_TOLERANCE} "
           "nats/token of dense training" if compressed_ok else "") + ".", "",
        "| W | " + " | ".join(f"{bw:g} Gbit/s" for bw in projection.bandwidths_gbps) + " |",
        "|---|" + "---|" * len(projection.bandwidths_gbps)]
    for W in projection.workers:
        cells = []
        for bw in projection.bandwidths_gbps:
            cell = projection.cell(W, bw)
            text = f"{cell.winner} / {equal.cell(W, bw).winner}"
            if compressed_ok:
                text += f" [{min(eligible, key=lambda n: cell.step_s[n])}]"
            cells.append(text)
        lines.append(f"| {W} | " + " | ".join(cells) + " |")
    if dense and not compressed_ok and any(v is not None for v in ok.values()):
        lines += ["", f"No compressed configuration ended within {QUALITY_TOLERANCE} nats/token of dense training's "
                  "validation loss in this study: per step, dense training learned the most. Whether compression "
                  "pays off is then a question of time to a target loss (projected step time × the steps each "
                  "needs), which longer runs answer."]
    lines.append("")
    return lines


def write_study_report(study_dir: Path, *, latency_s: float = DEFAULT_LATENCY_S, workers=DEFAULT_WORKERS,
                       bandwidths_gbps=DEFAULT_BANDWIDTHS_GBPS) -> Path:
    study_dir = Path(study_dir)
    study = load_study(study_dir)
    style = styles(study.trials)
    lines = [f"# Compression study: {study.name}", ""]
    done = [t for t in study.trials if t.ok]
    lines.append(f"{len(study.trials)} trial(s), {len(done)} completed. `results.csv` has every figure below, one "
                 "row per trial; each trial's run directory (column `run_dir`) has its own report.")
    lines.append("")
    plots = []
    if any(t.steps for t in study.trials):
        plots += [("Validation loss vs step", VAL_STEP, plot_val_vs_step(study, style, study_dir / VAL_STEP)),
                  ("The tradeoff: validation loss vs MB sent", VAL_MB,
                   plot_val_vs_mb(study, style, study_dir / VAL_MB))]
    if any(t.row.get("final_val_loss") is not None for t in study.trials):
        plots.append(("Final loss vs density", DENSITY, plot_final_vs_density(study, style, study_dir / DENSITY)))
    if any(t.row.get("step_time_s") for t in study.trials):
        plots.append(("Step time", STEP_TIME, plot_step_time(study, style, study_dir / STEP_TIME)))
    lines += ["## Results", ""] + _results_table(study) + [""]
    for title, name, caption in plots:
        lines += [f"## {title}", "", f"![{title}]({name})", "", caption, ""]
    inputs = projection_inputs(study)
    if inputs:
        projection = project([i.row for i in inputs], workers=workers, bandwidths_gbps=bandwidths_gbps,
                             latency_s=latency_s)
        first_trial = {t.row.get("config") or t.label: t.label for t in study.trials}
        colors = {i.row.name: style[first_trial[i.row.name]] for i in inputs}
        caption = plot_projection(projection, colors, study_dir / PROJECTION)
        lines += _projection_section(study, inputs, projection, caption)
    else:
        lines += ["## Projection to a cluster", "", "No completed trial with a measured step time: nothing to "
                  "project.", ""]
    failed = [t for t in study.trials if not t.ok]
    if failed:
        lines += ["## Failed trials", ""] + [f"- {t.label}: {t.row.get('status')}; log `{t.row.get('log')}`"
                                             for t in failed] + [""]
    if study.dropped:
        lines += ["## Combinations not run (duplicates)", ""]
        lines += [f"- {', '.join(f'{k}={v}' for k, v in d['overrides'].items())}: {d['reason']}"
                  for d in study.dropped] + [""]
    if study.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in study.notes] + [""]
    return write_atomic(study_dir / "report.md", "\n".join(lines))
