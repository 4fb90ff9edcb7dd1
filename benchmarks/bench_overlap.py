"""The exchange during backward against after it, on W = 2 gloo ranks over loopback on this
machine: the worker loop's own step (trainers/loop.py `Worker.train_step`, DeepSpeed engine,
exchange, clip, optimizer), one thread per rank, with `compression.overlap` true and false.

    .venv/bin/python benchmarks/bench_overlap.py                       # dense, top-k fp16 1%, random-k 1%
    .venv/bin/python benchmarks/bench_overlap.py --set compression.method=topk --steps 12

Each configuration is two fresh processes (ranks 0 and 1, `configs/netns_bench.yaml` by
default). Printed per configuration: rank 0's median step and the median time spent in the
"exchange" phase (with overlap: only what was left to wait for after backward), over the
steps after `--skip`. Loopback moves bytes at memory speed, and both ranks share two cores
with the collectives' own threads: this measures what overlap costs or saves in CPU time
here, not what it saves on a slow link (benchmarks/bench_cluster.py measures links).
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
    """One rank: build the Worker on a 2-rank gloo group, time its steps, print JSON (rank 0)."""
    import torch

    from launch.backends.plan import worker_plan
    from launch.spec.deepspeed_config import build_deepspeed_config
    from launch.spec.schema import load_spec
    from trainers.loop import Worker, import_deepspeed

    torch.set_num_threads(1)
    os.environ.update(RANK=str(args.rank), WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(args.port), GLOO_SOCKET_IFNAME="lo")
    spec = load_spec(args.spec, ["distributed.num_workers=2", "distributed.resources_per_worker={CPU: 1}",
                                 "train.grad_accum_steps=1", *args.set])
    import_deepspeed(False).init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    exchange_s: list[float] = []

    @contextlib.contextmanager
    def time_phase(phase: str):
        started = time.perf_counter()
        yield
        if phase == "exchange":
            exchange_s.append(time.perf_counter() - started)

    worker = Worker(worker_plan(spec, build_deepspeed_config(spec)), rank=args.rank, world_size=2,
                    reporter=None, checkpoints=None, time_phase=time_phase)
    steps_s = []
    for _ in range(args.steps):
        torch.distributed.barrier()  # both ranks start the step together
        started = time.perf_counter()
        worker.train_step()
        steps_s.append(time.perf_counter() - started)
    if args.rank == 0:
        print(json.dumps({"step_s": statistics.median(steps_s[args.skip:]),
                          "exchange_s": statistics.median(exchange_s[args.skip:]),
                          "overlapped": worker.overlapped is not None}))


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
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise SystemExit(f"a rank failed:\n{err[-3000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="configs/netns_bench.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="spec overrides (instead of the three default configurations)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the medians")
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args)
        return 0
    configs = {"given": args.set} if args.set else CONFIGS
    print(f"{args.spec}, W = 2 gloo ranks on loopback, one thread each; medians of {args.steps - args.skip} steps")
    print(f"{'configuration':<22} {'overlap':>7} {'step ms':>8} {'exchange ms':>12}")
    for name, overrides in configs.items():
        for overlap in ("false", "true"):
            got = run_pair(args.spec, [*overrides, f"compression.overlap={overlap}"], args.steps, args.skip)
            print(f"{name:<22} {overlap:>7} {got['step_s'] * 1e3:8.1f} {got['exchange_s'] * 1e3:12.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
