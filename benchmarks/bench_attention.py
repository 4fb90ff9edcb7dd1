"""Forward + backward time and peak memory of one attention layer per kind and length.

    python benchmarks/bench_attention.py                      # every kind, 512 .. 16K, CPU
    python benchmarks/bench_attention.py --kinds linear --lengths 1024,2048 --modes causal
    python benchmarks/bench_attention.py --device cuda
    python benchmarks/bench_attention.py --threads 1         # steadier on a shared machine
    python benchmarks/bench_attention.py --grids 16,32,64,128 --modes bidir --kinds ripple,rpe_fft
                                                              # images: side x side tokens

The layer: width 256, 4 heads, batch 1, one member (P = 1), training mode, each kind's
default options. What is timed is what the kind replaces in the model:
  kernel kinds (softmax, linear, performer, lara, hypercube, mra, rpe_fft, vars): the model's
      SelfAttention (qkv projection, kernel, output projection); baseline `softmax`.
  sublayer kinds (collaborative, key_dim 64 = width/4; contextpool, pooling in 1-D): the
      sublayer that replaces SelfAttention, projections included; baseline `softmax`.
  block kinds (flash): one block, which does the work of attention AND the MLP; its
      baseline is `softmax+mlp`, the model's TransformerBlock with softmax attention.
Speedup: baseline time of the same scope, causality and length / this kind's time.
t(2n)/t(n): along each row; a linear-cost kind tends to 2.0, a quadratic one to 4.0.

Grids (`--grids`): square images of side x side tokens, T = side^2, handed as the grid
(side, side) to the kinds that read one (ripple, rpe_fft's 2-D mask; trainers/attention/grid.py);
the others see T tokens. Each side doubling quadruples T, so the ratio column is t(4n)/t(n):
a linear-cost kind tends to 4.0, a quadratic one (SDPA) to 16.0. Without --grids, a kind
that needs a grid gets the most nearly square one with T = H*W (`grid_of`).

Method. Every (kind, mode, length) runs in a fresh Python process, so no allocator cache
from an earlier case hides memory. Time: one warm-up step, then the fastest of up to
`--repeats` steps (the minimum, because on a shared machine noise only adds time); timing
stops after the step that passes `--max-seconds`, so the slow cases (softmax at long
lengths) run a single timed step. Peak memory:
the extra memory of the warm-up step. On CPU that is the process's resident-set
high-water mark (VmHWM, reset through /proc/self/clear_refs just before the step) minus
the resident set before it: pages really touched, allocator overhead included. On CUDA
it is torch.cuda.max_memory_allocated minus the memory allocated before the step.

Reading CPU numbers: glibc hands out blocks over 32 MB as fresh mmap pages on every step,
so a length where activations cross that size also pays page faults each step (for flash
at 16K, t(2n)/t(n) is ~2.1 with MALLOC_MMAP_THRESHOLD_=4294967296 and ~2.5 without).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["softmax", "linear", "performer", "lara", "hypercube", "mra", "flash", "rpe_fft", "collaborative", "ripple"]
LENGTHS = [512, 1024, 2048, 4096, 8192, 16384]
WIDTH, HEADS = 256, 4
BLOCK_BASELINE = "softmax+mlp"
# The paper's algorithm at every size, so the ratios show its cost: ripple's `auto` would take the dense
# T x T form up to 256 tokens (a 16x16 grid).
KIND_OPTIONS = {"ripple": {"form": "tables"}}


def grid_of(length: int) -> tuple[int, int]:
    """The most nearly square grid (H, W) with H * W = length, H <= W."""
    height = max(h for h in range(1, int(length ** 0.5) + 1) if length % h == 0)
    return height, length // height


def build_layer(name: str, causal: bool, options: dict | None = None, grid: tuple[int, int] | None = None):
    """One layer of kind `name` (or the block baseline) with that kind's defaults, overridden by
    `options`; `grid` goes to the kinds that read one."""
    from trainers.attention import BLOCKS, SUBLAYERS
    from trainers.attention.grid import grid_kwargs
    from trainers.config import ModelConfig
    from trainers.model import SelfAttention, TransformerBlock

    kind = "softmax" if name == BLOCK_BASELINE else name
    config = ModelConfig(d_model=WIDTH, n_heads=HEADS, n_layers=1, attention={"kind": kind, **(options or {})})
    if kind in BLOCKS:
        return BLOCKS[kind](config.attention, members=1, d_model=WIDTH, n_layers=1, causal=causal, dropout=0.0,
                            **grid_kwargs(BLOCKS[kind], grid))
    if kind in SUBLAYERS:
        return SUBLAYERS[kind](config, members=1, causal=causal, **grid_kwargs(SUBLAYERS[kind], grid))
    if name == BLOCK_BASELINE:
        return TransformerBlock(config, members=1, causal=causal, layer=0, grid=grid)
    return SelfAttention(config, members=1, causal=causal, layer=0, grid=grid)


def measure(name: str, causal: bool, length: int, *, device: str, repeats: int, max_seconds: float,
            threads: int, options: dict | None = None, grid: tuple[int, int] | None = None) -> dict:
    """One case, in this (fresh) process: {"ms": fastest step, "mb": peak extra memory of the first step}.
    Under a torch.autocast context, the layer runs in its dtype. A kind that needs a grid and
    gets none runs on `grid_of(length)`."""
    import torch

    from trainers.attention import ALL_KINDS
    from trainers.attention.grid import requires_grid

    if threads:
        torch.set_num_threads(threads)
    if grid is None and name in ALL_KINDS and requires_grid(ALL_KINDS[name]):
        grid = grid_of(length)
    layer = build_layer(name, causal, options, grid).to(device).train()
    x_PBTD = torch.randn(1, 1, length, WIDTH, device=device, requires_grad=True)

    def step() -> float:
        start = time.perf_counter()
        layer(x_PBTD).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
        before = _proc_status_kb("VmRSS")
        step()
        peak = (_proc_status_kb("VmHWM") - before) * 1024
    times = [step()]
    while len(times) < repeats and sum(times) < max_seconds:
        times.append(step())
    return {"ms": 1000 * min(times), "mb": peak / 2 ** 20, "steps": len(times)}


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def run_case(name: str, causal: bool, length: int, args) -> dict:
    grid = [round(length ** 0.5)] * 2 if args.grids else None
    command = [sys.executable, __file__, "--case", json.dumps([name, causal, length, grid]), "--device", args.device,
               "--repeats", str(args.repeats), "--max-seconds", str(args.max_seconds), "--threads", str(args.threads)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(results: dict, names: list, modes: list, lengths: list, baseline_of: dict, *,
                factor: int = 2) -> None:
    """`factor`: the ratio column compares lengths `factor` apart (2 for --lengths, 4 for --grids)."""
    ratio_name = f"t({factor}n)/t(n)"
    header = (f"{'kind':<12} {'mode':<7} {'T':>6} {'ms':>10} {ratio_name:>11} {'speedup':>8} {'vs':<12} "
              f"{'peak MB':>8}")
    print(header)
    print("-" * len(header))
    for name in names:
        for causal in modes:
            previous = None
            for length in lengths:
                row = results.get((name, causal, length))
                if row is None:
                    continue
                mode = "causal" if causal else "bidir"
                if "error" in row:
                    print(f"{name:<12} {mode:<7} {length:>6} failed: {row['error']}")
                    previous = None
                    continue
                ratio = (f"{row['ms'] / previous['ms']:.2f}" if previous and previous["length"] * factor == length
                         else "")
                base = results.get((baseline_of[name], causal, length), {})
                speedup = f"{base['ms'] / row['ms']:.3g}x" if "ms" in base else ""  # 3 digits: 0.0044x
                print(f"{name:<12} {mode:<7} {length:>6} {row['ms']:>10.1f} {ratio:>11} {speedup:>8} "
                      f"{baseline_of[name]:<12} {row['mb']:>8.1f}")
                previous = {**row, "length": length}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds (baselines are added)")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="comma-separated sequence lengths")
    parser.add_argument("--grids", help="comma-separated sides of square images (T = side^2, the grid handed to "
                                        "the kinds that read one); replaces --lengths")
    parser.add_argument("--modes", default="causal,bidir", help="causal, bidir, or both comma-separated")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case at most (the fastest is reported)")
    parser.add_argument("--max-seconds", type=float, default=5.0, help="no further timed step once this is spent")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        name, causal, length, grid = json.loads(args.case)
        print(json.dumps(measure(name, causal, length, device=args.device, repeats=args.repeats,
                                 options=KIND_OPTIONS.get(name),
                                 max_seconds=args.max_seconds, threads=args.threads,
                                 grid=tuple(grid) if grid else None)))
        return

    from trainers.attention import ALL_KINDS, BLOCKS, KERNELS

    kinds = args.kinds.split(",")
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown:
        parser.error(f"unknown kinds {unknown}; valid: {sorted(ALL_KINDS)}")
    baseline_of = {kind: BLOCK_BASELINE if kind in BLOCKS else "softmax" for kind in kinds}
    baseline_of.update({"softmax": "softmax", BLOCK_BASELINE: BLOCK_BASELINE})
    wanted = {*kinds, *(baseline_of[kind] for kind in kinds)}
    names = [name for name in dict.fromkeys(["softmax", BLOCK_BASELINE, *kinds]) if name in wanted]
    modes = [mode == "causal" for mode in args.modes.split(",")]
    lengths = sorted(int(side) ** 2 for side in args.grids.split(",")) if args.grids else \
        sorted(int(n) for n in args.lengths.split(","))
    supports_causal = {**ALL_KINDS, BLOCK_BASELINE: KERNELS["softmax"]}
    results = {}
    for name in names:
        for causal in modes:
            if causal and not supports_causal[name].supports_causal:
                continue
            for length in lengths:
                results[(name, causal, length)] = row = run_case(name, causal, length, args)
                print(f"  {name} {'causal' if causal else 'bidir'} T={length}: {row}", file=sys.stderr, flush=True)
    print_table(results, names, modes, lengths, baseline_of, factor=4 if args.grids else 2)


if __name__ == "__main__":
    main()
