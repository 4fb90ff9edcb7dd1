"""Top-k selection: exact `torch.topk` on |x| against DGC's sampled threshold.

  python benchmarks/bench_topk_selection.py [--sizes 1e5 1e6 1e7] [--densities 0.1 0.01 0.001]
                                            [--members P] [--device cpu|cuda]

Variants, all on P rows x_PN of fp32 (P = --members, 1 by default) with
k = max(1, round(density * N)) per row:
  topk        torch.topk(|x|, k, sorted=False)  (what compression.TopKCompressor does)
  thr_approx  DGC (Lin et al. 2018): estimate the k-th largest |x| from a random sample
              of 1% of x (at least 1,000 entries), then take every |x| >= thr;
              the count is only about k
  thr_exact   compression.selection.topk_indices (what TopKCompressor runs for rows of
              2**18 or more and density <= 1/8; forced on here for every size): the
              threshold set a few standard deviations low, then torch.topk over the
              candidates, so exactly the top-k set; full top-k if the sample was unlucky;
              its candidates gathered row by row (a host sync per row: the CPU's path)
  batched     thr_exact with every row's candidates gathered at once (one host sync per
              call: the CUDA path), the same set
  abs_only    |x| alone: the floor any selection pays (one pass over memory)

Columns: milliseconds (median of repeats) and, for thresholds, the selected count / k.
Randomness comes from a private torch.Generator; the global RNG is not touched.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere
from compression.selection import topk_indices  # noqa: E402


def topk_select(x_PN: torch.Tensor, k: int) -> torch.Tensor:
    return x_PN.abs().topk(k, dim=1, sorted=False).indices


def threshold_select(x_PN: torch.Tensor, k: int, gen: torch.Generator, *, exact: bool,
                     batched: bool = False) -> torch.Tensor:
    if exact:
        return topk_indices(x_PN.abs(), k, gen, min_n=0, batched=batched)
    n = x_PN.shape[1]
    abs_N = x_PN[0].abs()  # DGC's approximation: the first row only
    s = min(n, max(1000, n // 100))
    sample_S = abs_N[torch.randint(n, (s,), generator=gen, device=gen.device)]
    # k-th largest of N  ~  (k*s/n)-th largest of the sample (DGC: approximate count).
    rank = max(1, min(s, round(k * s / n)))
    thr = sample_S.topk(rank, sorted=False).values.min()
    return (abs_N >= thr).nonzero().squeeze(1)


def bench(fn, repeats: int, clock=time.perf_counter, sync=lambda: None) -> float:
    fn()  # warm-up (allocator, thread pool)
    times = []
    for _ in range(repeats):
        sync()
        t0 = clock()
        fn()
        sync()  # on CUDA: the kernels' time, not their launch
        times.append((clock() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    ap.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.01, 0.001])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--members", type=int, default=1, help="rows P (a population's members)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time, steadier on a busy machine (use with --threads 1)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, P = {args.members} rows of "
          f"fp32 N(0,1) data, {args.clock} clock, median of {args.repeats}")
    print(f"{'N':>10} {'density':>8} {'k':>8} {'abs_only':>9} {'topk':>9} "
          f"{'thr_approx':>11} {'count/k':>8} {'thr_exact':>10} {'speedup':>8} {'batched':>9} {'speedup':>8}")
    for n in map(int, args.sizes):
        x_PN = torch.randn(args.members, n, generator=gen, device=device)
        t_abs = bench(lambda: x_PN.abs(), args.repeats, clock, sync)
        for density in args.densities:
            k = max(1, round(density * n))
            t_topk = bench(lambda: topk_select(x_PN, k), args.repeats, clock, sync)
            t_apx = bench(lambda: threshold_select(x_PN, k, gen, exact=False), args.repeats, clock, sync)
            count = threshold_select(x_PN, k, gen, exact=False).numel()
            t_ex = bench(lambda: threshold_select(x_PN, k, gen, exact=True), args.repeats, clock, sync)
            t_b = bench(lambda: threshold_select(x_PN, k, gen, exact=True, batched=True), args.repeats, clock, sync)
            # sanity: the exact variants return a true top-k set (compare magnitudes: ties)
            mags = lambda idx: x_PN.abs().gather(1, idx).sort(dim=1).values
            for batched in (False, True):
                got = threshold_select(x_PN, k, gen, exact=True, batched=batched)
                assert torch.equal(mags(got), mags(topk_select(x_PN, k)))
            print(f"{n:>10.0e} {density:>8} {k:>8} {t_abs:>8.2f}ms {t_topk:>8.2f}ms "
                  f"{t_apx:>10.2f}ms {count / k:>8.2f} {t_ex:>9.2f}ms {t_topk / t_ex:>7.2f}x "
                  f"{t_b:>7.2f}ms {t_topk / t_b:>7.2f}x")

if __name__ == "__main__":
    main()
