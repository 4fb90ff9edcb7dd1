"""Top-k selection on CPU: exact `torch.topk` on |x| against DGC's sampled threshold.

  python benchmarks/bench_topk_selection.py [--sizes 1e5 1e6 1e7] [--densities 0.1 0.01 0.001]

Variants, all on one flat fp32 tensor x_N with k = max(1, round(density * N)):
  topk        torch.topk(|x|, k, sorted=False)  (what compression.TopKCompressor does)
  thr_approx  DGC (Lin et al. 2018): estimate the k-th largest |x| from a random sample
              of 1% of x (at least 1,000 entries), then take every |x| >= thr;
              the count is only about k
  thr_exact   compression.selection.topk_indices (what TopKCompressor runs for rows of
              2**18 or more and density <= 1/8; forced on here for every size): the
              threshold set a few standard deviations low, then torch.topk over the
              candidates, so exactly the top-k set; full top-k if the sample was unlucky
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


def topk_select(x_N: torch.Tensor, k: int) -> torch.Tensor:
    return x_N.abs().topk(k, sorted=False).indices


def threshold_select(x_N: torch.Tensor, k: int, gen: torch.Generator, *, exact: bool) -> torch.Tensor:
    if exact:
        return topk_indices(x_N.abs().unsqueeze(0), k, gen, min_n=0)[0]
    n = x_N.numel()
    abs_N = x_N.abs()
    s = min(n, max(1000, n // 100))
    sample_S = abs_N[torch.randint(n, (s,), generator=gen)]
    # k-th largest of N  ~  (k*s/n)-th largest of the sample (DGC: approximate count).
    rank = max(1, min(s, round(k * s / n)))
    thr = sample_S.topk(rank, sorted=False).values.min()
    return (abs_N >= thr).nonzero().squeeze(1)


def bench(fn, repeats: int, clock=time.perf_counter) -> float:
    fn()  # warm-up (allocator, thread pool)
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    ap.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.01, 0.001])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time, steadier on a busy machine (use with --threads 1)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, fp32 N(0,1) data, "
          f"{args.clock} clock, median of {args.repeats}")
    print(f"{'N':>10} {'density':>8} {'k':>8} {'abs_only':>9} {'topk':>9} "
          f"{'thr_approx':>11} {'count/k':>8} {'thr_exact':>10} {'speedup':>8}")
    for n in map(int, args.sizes):
        x_N = torch.randn(n, generator=gen)
        t_abs = bench(lambda: x_N.abs(), args.repeats, clock)
        for density in args.densities:
            k = max(1, round(density * n))
            t_topk = bench(lambda: topk_select(x_N, k), args.repeats, clock)
            t_apx = bench(lambda: threshold_select(x_N, k, gen, exact=False), args.repeats, clock)
            count = threshold_select(x_N, k, gen, exact=False).numel()
            t_ex = bench(lambda: threshold_select(x_N, k, gen, exact=True), args.repeats, clock)
            # sanity: the exact variant returns a true top-k set (compare magnitudes: ties)
            mags = lambda idx: x_N.abs()[idx].sort().values
            assert torch.equal(mags(threshold_select(x_N, k, gen, exact=True)), mags(topk_select(x_N, k)))
            print(f"{n:>10.0e} {density:>8} {k:>8} {t_abs:>8.2f}ms {t_topk:>8.2f}ms "
                  f"{t_apx:>10.2f}ms {count / k:>8.2f} {t_ex:>9.2f}ms {t_topk / t_ex:>7.2f}x")


if __name__ == "__main__":
    main()
