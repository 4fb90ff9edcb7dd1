"""Parts 1-3 of benchmarks/device_check.py, each a function (plan) -> JSON-able dict, built
on the benchmarks they summarize (no measuring code of their own):

  1 population overhead   bench_population.population_overhead, bf16 autocast
  2 attention kinds       bench_attention.measure, every kind of ALL_KINDS
  3 step phases           bench_step_phases.measure (Worker.train_step + time_phase),
                          projected onto W workers by launch/study/netmodel.py
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_attention  # noqa: E402
import bench_population  # noqa: E402
import bench_step_phases  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROJECTED_WORKERS = (2, 4, 8, 16, 32, 64)
PROJECTED_GBPS = (1.0, 10.0)
SPARSE_DENSITY = 0.01


# ------------------------------------------------------------------ 1: population overhead


def population_part(plan) -> dict:
    """time(P) / (P x time(1)) per model size, batched population step under bf16 autocast."""
    device = torch.device(plan.device)
    models = {}
    for label, sizes in plan.population_sizes.items():
        models[label] = bench_population.population_overhead(
            plan.members, sizes, device, warmup=plan.warmup, repeats=plan.repeats, sequential=False,
            autocast_dtype=torch.bfloat16)
        models[label]["sizes"] = vars(sizes)
    return {"dtype": "bf16 (torch.autocast)", "models": models}


# ------------------------------------------------------------------ 2: attention kinds


def legal_options(kind: str, length: int) -> dict:
    """The kind's default options, with every integer option the spec's rules refuse at
    this length (launch/spec/rules.py, e.g. mra's blocks_per_row above the blocks in a
    row) halved until they are accepted. {} when the defaults pass."""
    from launch.spec.problems import SpecError
    from launch.spec.schema import load_spec
    from trainers.config import ModelConfig

    defaults = ModelConfig(attention={"kind": kind}).attention.model_dump()
    options = {}
    for _ in range(16):
        current = {**defaults, **options}
        mapping = ", ".join(f"{key}: {value}" for key, value in current.items())
        try:
            load_spec(ROOT / "configs/baseline_dense.yaml", [f"task.seq_len={length}", f"model.attention={{{mapping}}}"])
            return options
        except SpecError as err:
            refused = [p.path.rsplit(".", 1)[1] for p in err.problems if p.path.startswith("model.attention.")]
            shrinkable = [key for key in refused if isinstance(current.get(key), int) and current[key] > 1]
            if not shrinkable:  # e.g. a bidirectional kind on the causal task: not about the length
                return options
            options.update({key: current[key] // 2 for key in shrinkable})
    raise ValueError(f"{kind} at T={length}: no accepted options found")


def attention_part(plan) -> dict:
    """Forward + backward ms of one layer per kind, mode and length, with the baseline's
    speedup (kernels against `softmax`, SDPA; blocks against `softmax+mlp`)."""
    from trainers.attention import ALL_KINDS, BLOCKS, KERNELS, SUBLAYERS

    names = [*KERNELS, *SUBLAYERS, bench_attention.BLOCK_BASELINE, *BLOCKS]
    baseline = {name: bench_attention.BLOCK_BASELINE if name in BLOCKS else "softmax" for name in names}
    baseline[bench_attention.BLOCK_BASELINE] = bench_attention.BLOCK_BASELINE
    causal_ok = {**ALL_KINDS, bench_attention.BLOCK_BASELINE: KERNELS["softmax"]}
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if plan.device == "cuda"
                else torch.autocast("cpu", enabled=False))
    rows = []
    for name in names:
        for causal in (True, False):
            if causal and not causal_ok[name].supports_causal:
                continue
            for length in plan.lengths:
                row = {"kind": name, "mode": "causal" if causal else "bidir", "T": length, "vs": baseline[name]}
                try:
                    kind = "softmax" if name == bench_attention.BLOCK_BASELINE else name
                    row["options"] = legal_options(kind, length)
                    with autocast:
                        row.update(bench_attention.measure(
                            name, causal, length, device=plan.device, repeats=plan.repeats,
                            max_seconds=plan.attention_max_seconds, threads=0, options=row["options"]))
                except Exception as err:  # noqa: BLE001 - one case failing (out of memory) is a result
                    row["error"] = f"{type(err).__name__}: {err}"[:300]
                if plan.device == "cuda":
                    torch.cuda.empty_cache()
                rows.append(row)
    by_case = {(r["kind"], r["mode"], r["T"]): r for r in rows}
    for row in rows:
        base = by_case.get((row["vs"], row["mode"], row["T"]), {})
        if "ms" in row and "ms" in base:
            row["speedup"] = base["ms"] / row["ms"]
    precision = ("bf16 (torch.autocast; SDPA picks flash)" if plan.device == "cuda" else
                 "fp32; peak MB on CPU: only the first case is reliable in one process (freed pages are "
                 "reused), bench_attention.py measures each case in a fresh one")
    return {"precision": precision, "width": bench_attention.WIDTH, "heads": bench_attention.HEADS, "rows": rows}


# ------------------------------------------------------------------ 3: step phases + projection


def phases_part(plan) -> dict:
    """The phases of one step of configs/netns_bench.yaml's model for dense, top-k and
    random-k (density 0.01), and their projected step time on W workers (no T_dec)."""
    from launch.spec.schema import load_spec
    from launch.study.netmodel import MethodRow, project

    # Overlap off: the exchange phase must hold the exchange's own cost (bench_step_phases.py).
    base = ["distributed.num_workers=1", "distributed.resources_per_worker={CPU: 1}", "train.grad_accum_steps=1",
            "compression.overlap=false", f"distributed.use_gpu={str(plan.device == 'cuda').lower()}",
            *plan.phases_overrides]
    methods = {"dense": ["compression.method=none"],
               "topk": ["compression.method=topk", f"compression.density={SPARSE_DENSITY}"],
               "randomk": ["compression.method=randomk", f"compression.density={SPARSE_DENSITY}"]}
    measured, rows = {}, []
    for label, overrides in methods.items():
        spec = load_spec(ROOT / "configs/netns_bench.yaml", [*base, *overrides])
        if not measured:  # the process's first worker also pays for lazy initialisation: thrown away
            bench_step_phases.measure(spec, plan.phase_skip + 1, plan.phase_skip)
        measured[label] = bench_step_phases.measure(spec, plan.phase_steps, plan.phase_skip)
        rows.append(MethodRow(label, spec.compression.method, measured[label]["step"], measured[label]["bytes_sent"],
                              randomk_mode=spec.compression.randomk_mode))
    projection = project(rows, workers=PROJECTED_WORKERS, bandwidths_gbps=PROJECTED_GBPS)
    speedups = []
    for (workers, gbps), cell in sorted(projection.cells.items()):
        dense = cell.step_s["dense"]
        speedups.append({"W": workers, "gbps": gbps, "dense_step_s": dense,
                         **{f"{m}_speedup": dense / cell.step_s[m] for m in ("topk", "randomk")}})
    return {"spec": "configs/netns_bench.yaml", "overrides": plan.phases_overrides, "density": SPARSE_DENSITY,
            "steps": plan.phase_steps, "skipped": plan.phase_skip, "phases_s": measured,
            "latency_s": projection.latency_s, "projection": speedups}
