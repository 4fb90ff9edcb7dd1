"""The exchange during backward against after it, on W = 2 gloo ranks over loopback on this
machine: the worker loop's own step (trainers/loop.py `Worker.train_step`: DeepSpeed engine,
exchange, clip, optimizer), one thread per rank, `compression.overlap` false and true.

    .venv/bin/python benchmarks/bench_overlap.py                       # dense, top-k fp16 1%, random-k 1%
    .venv/bin/python benchmarks/bench_overlap.py --set compression.method=powersgd --set compression.rank=4

Paired, because this machine is shared and its speed drifts from minute to minute: each
configuration is one pair of rank processes holding BOTH workers (same spec, same weights,
the same batches), whose steps alternate (after, during, after, during, ...), each step
started by a barrier. Printed: rank 0's median step time of each, the median of the
per-pair differences (during minus after; negative: overlap is faster) with how many
pairs overlap won, and the median "exchange" phase (with overlap: only what was left to
wait for after backward). Loopback moves bytes at memory speed, and both ranks share two
cores with gloo's own threads: this measures what overlap saves or costs in CPU terms
here, not what it hides on a slow link (benchmarks/bench_cluster.py measures links).
"""
import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = {
    "dense": ["compression.method=none"],
    "topk-fp16 0.01": ["compression.method=topk", "compression.value_dtype=fp16", "compression.density=0.01"],
    "randomk-shared 0.01": ["compression.method=randomk", "compression.density=0.01"],
}


def rank_main(args) -> None:
    """One rank: both workers on a 2-rank gloo group, steps alternating; JSON on rank 0."""
    import torch

    from launch.backends.plan import worker_plan
    from launch.spec.deepspeed_config import build_deepspeed_config
    from launch.spec.schema import load_spec
    from trainers.loop import Worker, import_deepspeed

    torch.set_num_threads(1)
    base = ["distributed.num_workers=2", "distributed.resources_per_worker={CPU: 1}", "train.grad_accum_steps=1",
            *args.set]
    # Validated before torch.distributed starts: DeepSpeed's config check reads its world size.
    specs = {overlap: load_spec(args.spec, [*base, f"compression.overlap={overlap}"]) for overlap in ("false", "true")}
    os.environ.update(RANK=str(args.rank), WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(args.port), GLOO_SOCKET_IFNAME="lo")
    import_deepspeed(False).init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    times = {overlap: {"step": [], "exchange": []} for overlap in specs}
    workers = {}
    for overlap, spec in specs.items():
        @contextlib.contextmanager
        def time_phase(phase: str, seconds=times[overlap]["exchange"]):
            started = time.perf_counter()
            yield
            if phase == "exchange":
                seconds.append(time.perf_counter() - started)

        workers[overlap] = Worker(worker_plan(spec, build_deepspeed_config(spec)), rank=args.rank, world_size=2,
                                  reporter=None, checkpoints=None, time_phase=time_phase)
    for _ in range(args.steps):
        for overlap, worker in workers.items():
            torch.distributed.barrier()  # both ranks start the step together
            started = time.perf_counter()
            worker.train_step()
            times[overlap]["step"].append(time.perf_counter() - started)
    if args.rank == 0:
        print(json.dumps({overlap: {k: v[args.skip:] for k, v in t.items()} for overlap, t in times.items()}
                         | {"overlapped": workers["true"].overlapped is not None}))


def run_pair(spec: str, overrides: list[str], steps: int, skip: int) -> dict:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sets = [arg for item in overrides for arg in ("--set", item)]
    procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), "--port", str(port), "--spec", spec,
                               "--steps", str(steps), "--skip", str(skip), *sets],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    outputs = [p.communicate(timeout=1800) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise SystemExit(f"a rank failed:\n{err[-3000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="configs/netns_bench.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="spec overrides (instead of the three default configurations)")
    parser.add_argument("--steps", type=int, default=12, help="steps of each worker")
    parser.add_argument("--skip", type=int, default=2, help="first steps left out")
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args)
        return 0
    configs = {"given": args.set} if args.set else CONFIGS
    print(f"{args.spec}, W = 2 gloo ranks on loopback, one thread each, steps alternating; "
          f"medians over {args.steps - args.skip} pairs (ms)")
    print(f"{'configuration':<22} {'after':>8} {'during':>8} {'diff':>8} {'won':>6} {'exch after':>11} {'exch during':>12}")
    for name, overrides in configs.items():
        got = run_pair(args.spec, overrides, args.steps, args.skip)
        after, during = got["false"], got["true"]
        diffs = [d - a for a, d in zip(after["step"], during["step"])]
        med = {k: statistics.median(v) * 1e3 for k, v in
               (("after", after["step"]), ("during", during["step"]), ("diff", diffs),
                ("xa", after["exchange"]), ("xd", during["exchange"]))}
        won = f"{sum(d < 0 for d in diffs)}/{len(diffs)}"
        print(f"{name:<22} {med['after']:8.1f} {med['during']:8.1f} {med['diff']:+8.1f} {won:>6} {med['xa']:11.1f} "
              f"{med['xd']:12.1f}" + ("" if got["overlapped"] else "  (overlap had no effect)"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
