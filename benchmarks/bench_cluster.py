"""Compressed training measured on a real (namespace) cluster: step time and throughput
of real sparsepop jobs, one DeepSpeed worker per node, gradients crossing links shaped to
100 Mbit/s, 1 Gbit/s or 10 Gbit/s, compared with the network model of launch/study/netmodel.py.

    sudo .venv/bin/python benchmarks/bench_cluster.py                  # W=2, 1 Gbit/s, d=0.01: dense, topk-fp16, randomk-shared
    sudo .venv/bin/python benchmarks/bench_cluster.py --rates 100mbit 1gbit 10gbit \\
        --methods dense topk-fp32 topk-fp16 randomk-shared randomk-indep --densities 0.1 0.01 0.001
    sudo .venv/bin/python benchmarks/bench_cluster.py --methods dense topk-fp16 powersgd --ranks 1 2 4 \\
        --peers deepspeed ddp ddp-powersgd    # sparsepop beside its peers (benchmarks/peers.py)
    .venv/bin/python benchmarks/bench_cluster.py --table               # print the table of what was measured

How (launch/netns/): one namespace cluster of W hosts per W; the links are reshaped in
place between rates (`tc qdisc replace`), so Ray starts once. Every configuration is one
`python -m launch run configs/netns_bench.yaml --set ...` driven from host 0, with
`resources_per_worker: {CPU: 1, node_slot: 1}` (one worker per node; each run's Ray Train
worker-group line is checked for W distinct node IPs). The job's metrics.jsonl has
`time_s` (rank 0's cumulative time inside training steps: forward, backward, exchange,
optimizer) for every step; the step time is the median of its increments after the first
`--skip` steps. Throughput = W · micro_batch · seq_len tokens per step time.

Model: predicted step = compute + T_comm (launch/study/netmodel.py: ring all-reduce
2(W-1)/W·S/β + 2(W-1)α for dense and shared random-k, all-gather (W-1)·S/β + (W-1)α for
top-k and independent random-k; S = the run's recorded bytes_sent per worker per step).
Compute (compression's own cost included) comes two ways, both printed:
  W=1    the same job with ONE worker on host 0 (no communication; cached like the others).
         On this 2-core machine it under-estimates: with W workers the cores, memory
         bandwidth and the kernel's network work are shared, and every step waits for the
         slower worker.
  model  W=1 plus two costs of W workers on this machine, both measured at the calibration
         rate (10gbit, where the link's own time is small; --rates must include it):
         sync(W), what a step costs beyond compute and link whatever the payload (the row
         with the fewest bytes at that W and rate), and the transport's CPU cost per byte
         sent (gloo's copies and the kernel's TCP work on the same cores: the dense row's
         step beyond the rest of the model, per byte), plus for all-gather methods
         T_dec = (W-1)·K·c (netmodel.gathered_decompress_s): every worker unpacks and
         scatter-adds the other workers' K entries, which a one-worker job never does. c,
         seconds per received entry, is measured once on this machine with the exchange's
         own code (top-k d=0.1 on the model's gradient shapes, one thread, W=2 payloads
         against W=1) and kept in <results>.decompress.json (--redo-decompress measures it
         again). The two calibration rows fit by construction; every other row is predicted.
Rows that send buckets during the backward pass (DDP and its PowerSGD hook; sparsepop
unless compression.overlap is false) are modelled with netmodel.overlapped_step_s.

Peers (--peers, benchmarks/peers.py): the same model, batch and optimizer trained with
DeepSpeed's own all-reduce, DDP, or DDP's powerSGD_hook (at each --ranks value), one Ray
Train worker group per configuration started from host 0 like the sparsepop jobs
(benchmarks/peer_worker.py); their step time is rank 0's median step, timed as `time_s` is.
DDP's backward pass is measured by the same peer on one worker.

Results are appended to --results (JSON lines; default runs/bench_cluster.jsonl), so a grid
can be measured in several shorter invocations; --table prints them. Needs root (namespaces).
"""
import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distrib.communicators import Communicator, Pending  # noqa: E402
from launch.runs.files import METRICS, read_jsonl, run_dir_in  # noqa: E402
from launch.study import netmodel  # noqa: E402
from launch.netns import Interrupted, cluster, parse_rate  # noqa: E402
from peers import PEERS, configurations, is_peer, row_order

METHODS = {
    "dense": {"compression.method": "none"},
    "topk-fp32": {"compression.method": "topk", "compression.value_dtype": "fp32"},
    "topk-fp16": {"compression.method": "topk", "compression.value_dtype": "fp16"},
    "randomk-shared": {"compression.method": "randomk", "compression.randomk_mode": "shared"},
    "randomk-indep": {"compression.method": "randomk", "compression.randomk_mode": "independent"},
    "powersgd": {"compression.method": "powersgd"},  # at each --ranks value (compression.rank)
}
WORKER_IP = re.compile(r"\(ip=([0-9.]+), pid=\d+\) world_rank=(\d+)")


def key(record: dict) -> tuple:
    return (record["workers"], record["rate"], record["method"], record["density"], record.get("rank"))


def load_results(path: Path) -> dict[tuple, dict]:
    results = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                results[key(record)] = record  # the latest measurement of a configuration wins
    return results


class ForeignLoad:
    """CPU used on this machine by processes outside the cluster's namespaces (other jobs,
    test runs), sampled every second with psutil: on two cores, anything else running
    changes the step times, so a job waits for quiet first and records what it shared."""

    def __init__(self, net):
        self.ours = {os.stat(f"/run/netns/{name}").st_ino for name in net.created}
        self.me = os.getpid()
        self.last: dict[int, float] = {}
        self.busy = 0.0
        self.stop = threading.Event()
        self.thread = None

    def _foreign(self, proc) -> bool:
        try:
            return proc.pid != self.me and os.stat(f"/proc/{proc.pid}/ns/net").st_ino not in self.ours
        except OSError:
            return False

    def sample(self) -> float:
        """Foreign CPU seconds since the previous sample (a process's reaped children included)."""
        import psutil

        total, seen = 0.0, {}
        for proc in psutil.process_iter():
            try:
                if not self._foreign(proc):
                    continue
                t = proc.cpu_times()
                seen[proc.pid] = t.user + t.system + t.children_user + t.children_system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += max(0.0, seen[proc.pid] - self.last.get(proc.pid, seen[proc.pid]))
        self.last = seen
        return total

    def wait_for_quiet(self, threshold: float, window: float = 10.0, limit: float = 1800.0) -> float:
        """Block until the foreign load stays under `threshold` cores for `window` seconds."""
        started, quiet_since = time.monotonic(), None
        self.sample()
        said = False
        while time.monotonic() - started < limit:
            time.sleep(1)
            cores = self.sample()  # seconds of CPU per ~1 s
            now = time.monotonic()
            if cores < threshold:
                quiet_since = quiet_since or now
                if now - quiet_since >= window:
                    return now - started
            else:
                quiet_since = None
                if not said:
                    print(f"(waiting for other load to stop: {cores:.1f} cores busy outside the cluster) ",
                          end="", flush=True)
                    said = True
        return time.monotonic() - started

    def __enter__(self):
        self.busy = 0.0
        self.sample()
        started = time.monotonic()

        def loop():
            while not self.stop.wait(1.0):
                self.busy += self.sample()

        self.stop.clear()
        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        self.started = started
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.busy += self.sample()
        self.cores = self.busy / max(1e-9, time.monotonic() - self.started)


def job_overrides(*, method: str, density, rank, workers: int, steps: int, storage: Path,
                  extra: dict[str, str]) -> dict:
    """The spec overrides of a job: sparsepop's method, or for a peer the spec as it is (its
    exchange is the peer's own), with W workers, one per node."""
    overrides = {**extra, **({} if is_peer(method) else METHODS[method]), "distributed.num_workers": workers,
                 "train.steps": steps, "run.storage": str(storage),
                 "distributed.resources_per_worker": "{CPU: 1, node_slot: 1}"}
    if density is not None:
        overrides["compression.density"] = density
    if rank is not None and not is_peer(method):
        overrides["compression.rank"] = rank
    return overrides


def run_in_host0(ray, argv: list[str], *, label: str, log: Path) -> tuple[str, dict]:
    """argv in host 0 (as a cluster's client); its output, and what it cost: wall time, each
    link's bytes (interface counters), CPU used outside the cluster."""
    before = ray.net.counters()
    started = time.perf_counter()
    with ForeignLoad(ray.net) as foreign:
        done = subprocess.run(["ip", "netns", "exec", ray.net.host(0), *argv], env=ray.client_env(), cwd=REPO,
                              capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - started
    after = ray.net.counters()
    output = done.stdout + done.stderr
    with log.open("a") as handle:
        handle.write(f"\n===== {label}\n{output}")
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed ({done.returncode}); see {log}:\n" + output[-3000:])
    return output, {"link_bytes": {ip: after[ip]["tx_bytes"] - before[ip]["tx_bytes"] for ip in after},
                    "job_wall_s": wall,
                    "foreign_cores": foreign.cores}  # mean CPU cores used outside the cluster during the job


def worker_ips(output: str, workers: int) -> list[str]:
    """The node IPs of Ray Train's worker-group line: W distinct ones, or the job did not span the nodes."""
    ips = sorted({ip for ip, _ in WORKER_IP.findall(output)})
    if workers > 1 and len(ips) != workers:
        raise RuntimeError(f"expected {workers} workers on distinct nodes, Ray Train reported {ips}")
    return ips


def run_job(ray, *, spec: str, method: str, density, rank, workers: int, steps: int, skip: int, storage: Path,
            log: Path, extra: dict[str, str]) -> dict:
    overrides = job_overrides(method=method, density=density, rank=rank, workers=workers, steps=steps,
                              storage=storage, extra=extra)
    argv = [sys.executable, "-m", "launch", "run", spec]
    for k, v in overrides.items():
        argv += ["--set", f"{k}={v}"]
    label = f"{method} d={density} r={rank} W={workers}"
    output, cost = run_in_host0(ray, argv, label=label, log=log)
    run_dir = run_dir_in(output)
    if run_dir is None:
        raise RuntimeError(f"{label}: no run directory in its output; see {log}")
    rows = sorted(read_jsonl(run_dir / METRICS), key=lambda row: row["step"])
    rows = [row for row in rows if row["member"] == 0]
    times = [row["time_s"] for row in rows]
    increments = [b - a for a, b in zip([0.0] + times, times)]
    timed = increments[skip:]
    ds_config = json.loads((run_dir / "ds_config.json").read_text())
    ips = worker_ips(output, workers)
    # The final checkpoint (weights and Adam moments, ~300 MB per worker) is not needed here.
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    tokens_per_step = rows[-1]["tokens"] / rows[-1]["step"]
    step_s = statistics.median(timed)
    return {"step_s": step_s, "step_s_all": increments, "tokens_per_s": tokens_per_step / step_s,
            "bytes_sent": rows[-1]["bytes_sent"], "dense_bytes": rows[-1]["dense_bytes"],
            "loss": rows[-1]["loss"], "val_loss": rows[-1].get("val_loss"),
            "worker_ips": ips, "run_dir": str(run_dir), **cost,
            "micro_batch": ds_config["train_micro_batch_size_per_gpu"]}


def run_peer_job(ray, *, spec: str, method: str, rank, workers: int, steps: int, skip: int, storage: Path,
                 log: Path, extra: dict[str, str]) -> dict:
    """A peer (benchmarks/peer_worker.py) on the same spec, W workers, one per node."""
    overrides = job_overrides(method=method, density=None, rank=rank, workers=workers, steps=steps,
                              storage=storage, extra=extra)
    storage.mkdir(parents=True, exist_ok=True)
    out = storage / f"peer-{method}-r{rank}-W{workers}-{os.getpid()}-{time.time_ns()}.json"
    argv = [sys.executable, str(REPO / "benchmarks" / "peer_worker.py"), "--peer", method, "--spec", spec,
            "--skip", str(skip), "--out", str(out), *(["--rank", str(rank)] if rank is not None else [])]
    for k, v in overrides.items():
        argv += ["--set", f"{k}={v}"]
    output, cost = run_in_host0(ray, argv, label=f"{method} r={rank} W={workers}", log=log)
    result = json.loads(out.read_text())
    return {**result, "tokens_per_s": result["tokens_per_step"] / result["step_s"], "worker_ips":
            worker_ips(output, workers), "run_dir": str(out), **cost}


def collective_of(method: str) -> str:
    """Its compression method's collective, from the registry (compression/methods.py), or
    the peer's (benchmarks/peers.py)."""
    if is_peer(method):
        return PEERS[method].collective
    conf = METHODS[method]
    return netmodel.collective_for(conf["compression.method"], conf.get("compression.randomk_mode", "shared"))


def bytes_per_entry(method: str) -> int:
    """Wire bytes of one sent coordinate: its value (fp32 unless fp16), plus an int32 index
    for all-gather methods (shared random-k's receivers redraw the indices; dense has none)."""
    value = 2 if METHODS[method].get("compression.value_dtype") == "fp16" else 4
    return value + (4 if collective_of(method) == netmodel.ALL_GATHER else 0)


def comm_model_s(record: dict, rate_bps: float) -> float:
    """launch/study/netmodel.py: this configuration's exchange at rate_bps (α = netmodel's default)."""
    return netmodel.FORMULAS[collective_of(record["method"])](record["bytes_sent"], workers=record["workers"],
                                                              bandwidth_gbps=rate_bps / 1e9)


def overlaps(record: dict) -> bool:
    """Whether the row sends buckets while the backward pass runs: DDP and its hook, and
    sparsepop unless the job set compression.overlap false (every method here is layerwise)."""
    if is_peer(record["method"]):
        return PEERS[record["method"]].overlaps
    return str(record.get("overrides", {}).get("compression.overlap", "true")).lower() != "false"


def step_model_s(record: dict, compute_s: float, backward_s: float | None, buckets: int | None) -> float:
    """compute + the exchange's modelled time at the record's link, or for a row that sends
    its buckets during the backward pass netmodel.overlapped_step_s over its buckets."""
    comm = comm_model_s(record, record["rate_bps"])
    if math.isnan(compute_s):  # e.g. a missing one-worker job
        return compute_s
    if overlaps(record) and backward_s is not None and buckets:
        return netmodel.overlapped_step_s(compute_s, comm, backward_s=min(backward_s, compute_s), buckets=buckets)
    return compute_s + comm


def overlap_terms(record: dict, results: dict[tuple, dict], sparsepop_buckets: int) -> tuple[float | None, int | None]:
    """(backward seconds, buckets) for step_model_s. A peer's: its 1-worker job's backward
    pass and its own buckets. Sparsepop's: DDP's 1-worker backward pass (same model and
    batch) plus what compressing costs this method on one worker beyond dense, since the
    overlapped exchange compresses each bucket inside the backward pass; its buckets are
    distrib/overlap.py's for the model."""
    if not overlaps(record):
        return None, None
    if is_peer(record["method"]):
        alone = results.get((1, "none", *key(record)[2:]))
        return (alone or {}).get("backward_s"), record.get("buckets")
    ddp = results.get((1, "none", "ddp", None, None))
    dense = results.get((1, "none", "dense", None, None))
    alone = results.get((1, "none", *key(record)[2:]))
    if not (ddp and dense and alone):
        return None, None
    return ddp["backward_s"] + max(0.0, alone["step_s"] - dense["step_s"]), sparsepop_buckets


class ReplicatedCommunicator(Communicator):
    """W workers that all send what this one sends, and no network: the exchange's own
    unpacking and scatter-adding of W payloads, timed for the model's decompress term."""

    rank = 0

    def __init__(self, world_size: int):
        self.world_size = world_size

    def start_all_reduce_sum_(self, tensor):
        tensor.mul_(self.world_size)
        return Pending((), lambda: tensor)

    def start_all_gather(self, tensor):
        gathered = tensor.expand(self.world_size, *tensor.shape).clone()
        return Pending((), lambda: gathered)

    def broadcast_(self, tensor, src=0):
        return tensor

    def barrier(self):
        pass


def bench_model(spec_path: str, overrides: list[str]):
    """(spec, one-member model) of the benchmark's spec: the model every job trains."""
    from launch.spec.schema import load_spec
    from trainers.model import PopulationTransformer
    from trainers.tasks import build_task_data

    spec = load_spec(spec_path, overrides)
    data = build_task_data(spec.task, seed=spec.seed)
    model = PopulationTransformer(spec.model, members=1, vocab_size=data.vocab_size, max_seq_len=spec.task.seq_len,
                                  causal=data.causal, num_classes=data.num_classes, pad_id=data.pad_id,
                                  grid=data.grid, patch_size=data.patch_size)
    return spec, model


def overlap_bucket_count(spec_path: str) -> int:
    """How many buckets sparsepop's overlapped exchange sends the model's gradient in."""
    from distrib.overlap import bucket_names

    _, model = bench_model(spec_path, [])
    return len(bucket_names(list(model.named_parameters())))


def measure_decompress_cost(spec_path: str, *, density: float = 0.1, reps: int = 9) -> dict:
    """c of netmodel.gathered_decompress_s, seconds per received entry: one thread (as a
    worker with CPU: 1) runs the exchange's sparse all-gather path (unpack, scatter-add,
    divide) on one step's top-k payloads of the benchmark model's gradient shapes, with
    W = 1 and W = 2 payloads in turn; c = (median at W=2 - median at W=1) / K."""
    from distrib.exchange import GradientExchange

    torch.set_num_threads(1)
    spec, model = bench_model(spec_path, ["compression.method=topk", f"compression.density={density}"])
    grads = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    exchanges = {w: GradientExchange(config=spec.compression, communicator=ReplicatedCommunicator(w)) for w in (1, 2)}
    payloads = exchanges[1].exchange(grads, step=0).payloads
    acc_dtypes = {bucket: torch.float32 for bucket in payloads}
    entries = sum(p.idx_K.numel() for p in payloads.values())
    times = {1: [], 2: []}
    for _ in range(reps):  # interleaved, so drifting machine speed hits both alike
        for workers, exchange in exchanges.items():
            started = time.perf_counter()
            exchange.gather_sparse(payloads, acc_dtypes)
            times[workers].append(time.perf_counter() - started)
    median_s = {w: statistics.median(t[1:]) for w, t in times.items()}
    return {"seconds_per_entry": (median_s[2] - median_s[1]) / entries, "entries": entries,
            "gather_path_s": median_s, "density": density, "spec": spec_path}


def decompress_cost(path: Path, spec_path: str, *, redo: bool = False) -> float:
    """c from `path` (JSON), measured and written there first if missing (or redo)."""
    if redo or not path.exists():
        measured = measure_decompress_cost(spec_path)
        path.write_text(json.dumps(measured) + "\n")
        print(f"decompress cost: {measured['seconds_per_entry'] * 1e9:.1f} ns per received entry "
              f"(top-k d={measured['density']}, {measured['entries']:,.0f} entries; written to {path})")
    return json.loads(path.read_text())["seconds_per_entry"]


def decompress_model_s(record: dict, seconds_per_entry: float) -> float:
    """netmodel.gathered_decompress_s for this configuration (0 for all-reduce methods)."""
    if collective_of(record["method"]) != netmodel.ALL_GATHER:
        return 0.0
    return netmodel.gathered_decompress_s(record["bytes_sent"] / bytes_per_entry(record["method"]),
                                          workers=record["workers"], seconds_per_entry=seconds_per_entry)


def rate_name(bps: float) -> str:
    return f"{bps / 1e9:g} Gbit/s" if bps >= 1e9 else f"{bps / 1e6:g} Mbit/s"


@dataclass(frozen=True)
class Calibration:
    """Two costs of a W-worker step on this machine beyond W=1 compute and the network model,
    measured at the calibration rate: `sync_s` whatever the payload, `per_byte_s` for each
    byte a worker sends (see the module docstring)."""
    sync_s: float
    per_byte_s: float

    def compute_s(self, record: dict, alone_s: float, seconds_per_entry: float) -> float:
        return alone_s + self.sync_s + self.per_byte_s * record["bytes_sent"] + decompress_model_s(
            record, seconds_per_entry)


def calibrated_step_s(record: dict, results: dict[tuple, dict], calibration: Calibration, seconds_per_entry: float,
                      sparsepop_buckets: int) -> float:
    """The model's step for `record`: its one-worker compute plus `calibration`'s costs,
    then the network model (overlapped where the row overlaps); nan without that job."""
    alone = results.get((1, "none", *key(record)[2:]))
    if alone is None:
        return float("nan")
    compute = calibration.compute_s(record, alone["step_s"], seconds_per_entry)
    return step_model_s(record, compute, *overlap_terms(record, results, sparsepop_buckets))


def calibrate(results: dict[tuple, dict], workers: int, rate: str, seconds_per_entry: float,
              sparsepop_buckets: int) -> Calibration | None:
    """sync from the row with the fewest bytes at (W, rate), then the per-byte cost from
    sparsepop's dense row there (the model's step grows one for one with compute)."""
    rows = [r for r in results.values() if r["workers"] == workers and r["rate"] == rate and not is_peer(r["method"])]
    dense = results.get((workers, rate, "dense", None, None))
    if not rows or dense is None:
        return None

    lightest = min(rows, key=lambda r: r["bytes_sent"])
    sync = lightest["step_s"] - calibrated_step_s(lightest, results, Calibration(0.0, 0.0), seconds_per_entry,
                                                  sparsepop_buckets)
    per_byte = (dense["step_s"] - calibrated_step_s(dense, results, Calibration(sync, 0.0), seconds_per_entry,
                                                    sparsepop_buckets)) / dense["bytes_sent"]
    return Calibration(sync, per_byte)


def setting(record: dict) -> str:
    """The density, or PowerSGD's rank as r=N, or - (dense)."""
    if record.get("rank") is not None:
        return f"r={record['rank']}"
    return "-" if record["density"] is None else f"{record['density']:g}"


def link_mb_per_step(record: dict) -> float:
    """Mean bytes a host sent over its link during the whole job, per step, in MB (the
    interface counters: the initial weights' broadcast and Ray's own traffic included)."""
    sent = record.get("link_bytes") or {}
    return statistics.mean(sent.values()) / record["steps"] / 1e6 if sent else float("nan")


def print_table(results: dict[tuple, dict], *, seconds_per_entry: float, sparsepop_buckets: int,
                calibration_rate: str = "10gbit") -> None:
    """Two predictions per row (the module docstring): model(W=1), the same job's compute on
    one worker plus the network model; model, that plus the W-worker costs calibrated at
    `calibration_rate` (calibrate). Rows that overlap (DDP, sparsepop's overlapped exchange)
    are modelled with netmodel.overlapped_step_s (step_model_s, overlap_terms)."""
    one_worker = {key(r)[2:]: r for r in results.values() if r["workers"] == 1}
    measured = sorted((r for r in results.values() if r["workers"] > 1), key=row_order)
    if not measured:
        print("no multi-worker measurements yet")
        return
    calibrations = {w: calibrate(results, w, calibration_rate, seconds_per_entry, sparsepop_buckets)
                    for w in {r["workers"] for r in measured}}
    nan = float("nan")
    print(f"{'W':>2} {'link':>11} {'method':<15} {'d / rank':>8} {'step s':>7} {'tok/s':>6} {'vs dense':>8} "
          f"{'vs DDP':>6} {'sent/dense':>10} {'link MB':>7} {'loss':>6} {'val':>6} {'comm model':>10} {'W=1 s':>6} "
          f"{'err(W=1)':>8} {'model s':>7} {'err':>5} {'other':>5}")
    for r in measured:
        dense = results.get((r["workers"], r["rate"], "dense", None, None))
        ddp = results.get((r["workers"], r["rate"], "ddp", None, None))
        speedup = f"{r['tokens_per_s'] / dense['tokens_per_s']:.2f}x" if dense else "-"
        vs_ddp = f"{r['tokens_per_s'] / ddp['tokens_per_s']:.2f}x" if ddp else "-"
        comm = comm_model_s(r, r["rate_bps"])
        w1 = one_worker.get(key(r)[2:])
        terms = overlap_terms(r, results, sparsepop_buckets)
        err_w1 = r["step_s"] / step_model_s(r, w1["step_s"], *terms) - 1 if w1 else nan
        calibration = calibrations[r["workers"]]
        model = calibrated_step_s(r, results, calibration, seconds_per_entry, sparsepop_buckets) if calibration else nan
        val = r.get("val_loss")
        print(f"{r['workers']:>2} {rate_name(r['rate_bps']):>11} {r['method']:<15} {setting(r):>8} "
              f"{r['step_s']:>7.3f} {r['tokens_per_s']:>6.0f} {speedup:>8} {vs_ddp:>6} "
              f"{r['bytes_sent'] / r['dense_bytes']:>10.2%} {link_mb_per_step(r):>7.1f} "
              f"{r.get('loss', nan):>6.3f} {nan if val is None else val:>6.3f} {comm:>10.3f} "
              f"{w1['step_s'] if w1 else nan:>6.3f} {err_w1:>+8.0%} {model:>7.3f} {r['step_s'] / model - 1:>+5.0%} "
              f"{r.get('foreign_cores', nan):>5.2f}")
    print("step s: median time_s increment per step (rank 0, after the first steps; peers: their step timed the "
          "same way); vs dense / vs DDP: throughput against sparsepop dense / DDP at the same W and link; "
          "sent/dense: bytes_sent per step (peers: their collectives' payload, benchmarks/peers.py); link MB: "
          "interface bytes sent per host during the whole job, per step; loss / val: training loss at the last "
          "step and validation loss after it, averaged over workers; comm model: launch/study/netmodel.py "
          "at the link rate for the run's bytes_sent; W=1 s: compute from the 1-worker job; err(W=1) = step / "
          "(W=1 compute + comm model) - 1, for rows that overlap (DDP, its PowerSGD hook, sparsepop unless "
          "compression.overlap is false) netmodel.overlapped_step_s with the 1-worker backward pass (sparsepop: "
          f"DDP's plus the method's compression cost) and the buckets (sparsepop: {sparsepop_buckets}); model s / "
          f"err: W=1 compute plus the W-worker costs calibrated at {calibration_rate} ("
          + ", ".join(f"W={w}: sync {c.sync_s:.3f} s, {c.per_byte_s * 1e9:.2f} ns per byte sent"
                      for w, c in sorted(calibrations.items()) if c)
          + "; the two calibration rows fit by construction) "
          f"and netmodel.gathered_decompress_s at {seconds_per_entry * 1e9:.1f} ns per received entry; other: CPU "
          "cores used outside the cluster during the job (nan: not recorded)")


# ---------------------------------------------------------------- the collectives alone

_COLLECTIVES = r"""
import json, statistics, sys, time, torch, torch.distributed as dist
rank, world, master, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
payloads = json.loads(sys.argv[5])  # name -> [collective, bytes]
sys.path.insert(0, sys.argv[6])  # the repository
from distrib.communicators import TorchCommunicator
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"tcp://{master}:{port}", rank=rank, world_size=world)
comm = TorchCommunicator()  # what the exchange calls
result = {}
for name, (collective, nbytes) in payloads.items():
    times = []
    for i in range(4):
        if collective == "all-reduce":
            x = torch.ones(max(1, nbytes // 4))
            comm.barrier(); t = time.perf_counter(); comm.all_reduce_sum_(x)
        else:  # the exchange packs values and indices into one uint8 buffer (distrib/exchange.py)
            x = torch.ones(nbytes, dtype=torch.uint8)
            comm.barrier(); t = time.perf_counter(); comm.all_gather(x)
        times.append(time.perf_counter() - t)
    result[name] = statistics.median(times[1:])
if rank == 0:
    print(json.dumps(result), flush=True)
dist.destroy_process_group()
"""


def collective_payloads(params: int, density: float) -> dict[str, tuple[str, int]]:
    """Bytes one worker contributes per step (approximately what bytes_sent records)."""
    k = round(density * params)
    return {method: (collective_of(method), bytes_per_entry(method) * (params if method == "dense" else k))
            for method in METHODS if method != "powersgd"}  # PowerSGD's payload follows its rank, not a density


def measure_collectives(args) -> None:
    """The exchange's all-reduce / all-gather (distrib/communicators.py over gloo) with the
    benchmark model's payloads, over the shaped links, CPUs otherwise idle: the network
    model checked without compute noise."""
    from launch.netns import node_env

    payloads = {m: v for m, v in collective_payloads(args.params, args.densities[0]).items() if m in args.methods}
    print(f"{'W':>2} {'link':>11} {'method':<15} {'collective':<10} {'MB':>8} {'measured s':>10} {'model s':>8} "
          f"{'error':>6}")
    for workers in args.workers:
        with cluster(hosts=max(2, workers), rate_bps=None, with_ray=False, say=lambda _: None) as (net, _):
            for port, rate in enumerate(args.rates, start=29600):
                net.reshape(parse_rate(rate))
                argv = lambda r: ["ip", "netns", "exec", net.host(r), sys.executable, "-c", _COLLECTIVES, str(r),
                                  str(workers), net.addr(0), str(port), json.dumps(payloads), str(REPO)]
                procs = [subprocess.Popen(argv(r), env=node_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True) for r in range(workers)]
                out = procs[0].communicate(timeout=600)[0]
                for proc in procs[1:]:
                    proc.wait(timeout=60)
                measured = json.loads(out.strip().splitlines()[-1])
                for method, (collective, nbytes) in payloads.items():
                    model = netmodel.FORMULAS[collective](nbytes, workers=workers, bandwidth_gbps=parse_rate(rate) / 1e9)
                    print(f"{workers:>2} {rate_name(parse_rate(rate)):>11} {method:<15} {collective:<10} "
                          f"{nbytes / 1e6:>8.2f} {measured[method]:>10.4f} {model:>8.4f} "
                          f"{measured[method] / model - 1:>+6.0%}", flush=True)
    print("measured: median of 3 timed calls (after one warm-up) of the collective alone, rank 0, over the shaped "
          "links; model: launch/study/netmodel.py (alpha = its default)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="W values (one node each; default 2)")
    parser.add_argument("--rates", nargs="+", default=["1gbit"], help="link rates, e.g. 100mbit 1gbit 10gbit")
    parser.add_argument("--methods", nargs="+", default=["dense", "topk-fp16", "randomk-shared"],
                        choices=list(METHODS))
    parser.add_argument("--densities", type=float, nargs="+", default=[0.01])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4],
                        help="PowerSGD ranks, for method powersgd and peer ddp-powersgd (default 1 2 4)")
    parser.add_argument("--peers", nargs="+", default=[], choices=list(PEERS),
                        help="peers measured beside sparsepop's rows (benchmarks/peers.py; default none)")
    parser.add_argument("--steps", type=int, default=8, help="steps per job (default 8)")
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the median (default 2)")
    parser.add_argument("--settle", type=float, default=20, help="seconds of quiet after the cluster starts")
    parser.add_argument("--quiet-threshold", type=float, default=0.15,
                        help="before each job, wait until processes outside the cluster use less than this many "
                             "cores for 10 s (0: do not wait); what they used during the job is recorded")
    parser.add_argument("--spec", default="configs/netns_bench.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="spec overrides for every job, e.g. task.seq_len=32 (give such a variant its own "
                             "--results file: results are keyed by W, rate, method, density and rank only)")
    parser.add_argument("--results", type=Path, default=REPO / "runs" / "bench_cluster.jsonl")
    parser.add_argument("--no-compute", action="store_true", help="skip the 1-worker compute runs (no model)")
    parser.add_argument("--redo", action="store_true", help="measure configurations already in --results again")
    parser.add_argument("--table", action="store_true", help="only print the table of --results")
    parser.add_argument("--redo-decompress", action="store_true",
                        help="measure the model's cost per received entry again (kept next to --results)")
    parser.add_argument("--collectives", action="store_true",
                        help="no training: time gloo's collectives with the model's payloads against the model")
    parser.add_argument("--params", type=int, default=25_416_704,
                        help="parameters for --collectives (configs/netns_bench.yaml's model: 25,416,704)")
    args = parser.parse_args()
    if any("=" not in item for item in args.set):
        parser.error(f"--set takes KEY=VALUE, got {[item for item in args.set if '=' not in item]}")
    if any(rank < 1 for rank in args.ranks):
        parser.error(f"--ranks: PowerSGD ranks are >= 1, got {args.ranks}")
    if args.skip >= args.steps:
        parser.error(f"--skip {args.skip} leaves no timed step of --steps {args.steps}; lower --skip")
    if args.collectives:
        measure_collectives(args)
        return 0
    args.results.parent.mkdir(parents=True, exist_ok=True)
    results = load_results(args.results)
    seconds_per_entry = decompress_cost(args.results.with_suffix(".decompress.json"), args.spec,
                                        redo=args.redo_decompress)
    if args.table:
        print_table(results, seconds_per_entry=seconds_per_entry, sparsepop_buckets=overlap_bucket_count(args.spec))
        return 0
    extra = dict(item.split("=", 1) for item in args.set)
    storage = args.results.parent / "bench_cluster_runs"
    log = args.results.with_suffix(".log")
    confs = list(configurations(args.methods, args.densities, args.ranks, args.peers))

    def record(ray, *, workers, rate, rate_bps, method, density, rank):
        entry = {"workers": workers, "rate": rate, "rate_bps": rate_bps, "method": method, "density": density,
                 "rank": rank, "steps": args.steps, "spec": args.spec, "overrides": extra}
        if key(entry) in results and not args.redo:
            return
        print(f"  W={workers} {rate:>7} {method:<15} {setting(entry)}: ", end="", flush=True)
        if args.quiet_threshold > 0:
            ForeignLoad(ray.net).wait_for_quiet(args.quiet_threshold)
        job = {"spec": args.spec, "method": method, "rank": rank, "workers": workers, "steps": args.steps,
               "skip": args.skip, "storage": storage, "log": log, "extra": extra}
        entry.update(run_peer_job(ray, **job) if is_peer(method) else run_job(ray, density=density, **job))
        print(f"{entry['step_s']:.3f} s/step, {entry['tokens_per_s']:,.0f} tok/s "
              f"(job {entry['job_wall_s']:.0f} s, workers on {', '.join(entry['worker_ips'])}; "
              f"{entry['foreign_cores']:.2f} cores busy outside the cluster)", flush=True)
        results[key(entry)] = entry
        with args.results.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    try:
        measure_grid(args, confs, record)
    except Interrupted as sig:
        print(f"\ninterrupted ({sig}); the cluster is torn down; results so far are in {args.results}")
        return 130
    print()
    print_table(results, seconds_per_entry=seconds_per_entry, sparsepop_buckets=overlap_bucket_count(args.spec))
    return 0


def measure_grid(args, confs, record) -> None:
    for workers in args.workers:
        with cluster(hosts=max(2, workers), rate_bps=parse_rate(args.rates[0]), cpus_per_node=1) as (net, ray):
            time.sleep(args.settle)  # Ray's dashboard modules and agents are still starting, using CPU
            if not args.no_compute:
                for method, density, rank in confs:  # links do not matter: one worker sends nothing
                    record(ray, workers=1, rate="none", rate_bps=0.0, method=method, density=density, rank=rank)
            for rate in args.rates:
                net.reshape(parse_rate(rate))
                for method, density, rank in confs:
                    record(ray, workers=workers, rate=rate, rate_bps=parse_rate(rate), method=method,
                           density=density, rank=rank)


if __name__ == "__main__":
    sys.exit(main())
