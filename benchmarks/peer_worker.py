"""One peer of benchmarks/peers.py trained on a namespace cluster, as bench_cluster.py's
sparsepop rows are: run in host 0, it joins the cluster's Ray (RAY_ADDRESS) and starts a
Ray Train TorchTrainer of distributed.num_workers workers with the spec's
resources_per_worker (one per node) and sparsepop's process group (gloo, its store on the
node's address: launch/backends/ray_rendezvous.py), so the gradients cross the same links.

    ip netns exec HOST0 python benchmarks/peer_worker.py --peer ddp-powersgd --rank 2 \\
        --spec configs/netns_bench.yaml --set distributed.num_workers=2 --out RESULT.json

Same model, batch and optimizer as a sparsepop job of the spec, with P = 1: the model,
task data and shards of trainers/ (the same seeds: identical initial weights on every rank,
each rank its own shard), PopulationAdamW with the spec's learning-rate schedule and weight
decay, trainers' per-member clip (train.grad_clip) after the exchange; only the exchange
differs. The step is timed as sparsepop's `time_s` is (batch, forward, backward, exchange,
clip, optimizer; the loss's all-reduce for the log after it, outside the time).

powerSGD_hook keeps torch's defaults except start_powerSGD_iter: its default (1000) would
leave a benchmark of a few steps all-reduce only; it is compression.warmup_steps as
sparsepop's PowerSGD reads it, at least 2 (torch's minimum with error feedback). The
population model's weights carry a member axis of size 1 ([1, n, m]): the hook would view
each as a [1, n·m] matrix and compress nothing, so it is handed the bucket with that axis
dropped from every gradient (views of the same buffer), as a plain model's DDP gives it.

Rank 0 writes --out (JSON, atomically): per-step times, the backward pass's share, the
losses, the validation loss after the last step, wire bytes per step and DDP's buckets.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from peers import PEERS, ddp_buckets, wire_bytes

from launch.backends.plan import population_controller
from trainers.loop import import_deepspeed
from trainers.model import PopulationTransformer, member_losses
from trainers.optim import build_optimizer
from trainers.population_optim import clip_grad_norm_per_member_, member_learning_rates
from trainers.tasks import build_task_data


class MemberAxisDropped:
    """DDP's GradBucket for torch's hook, each gradient [1, ...] seen as [...] (same buffer)."""

    def __init__(self, bucket):
        self.bucket = bucket

    def buffer(self):
        return self.bucket.buffer()

    def index(self):
        return self.bucket.index()

    def is_last(self):
        return self.bucket.is_last()

    def gradients(self):
        return [g.view(g.shape[1:]) if g.dim() > 1 else g for g in self.bucket.gradients()]


def powersgd_over_gloo(buckets: int):
    """torch's powerSGD_hook (a DDP comm hook), each bucket's collectives on a process group
    of its own.

    The hook launches a bucket's first all-reduce from DDP's backward thread and its P and
    Q all-reduces from the callbacks of the one before, which gloo runs on its own threads
    when an all-reduce completes; the next bucket's first all-reduce races them, the ranks
    issue the collectives of one group in different orders, and gloo pairs mismatched ones
    ("Received data size doesn't match expected size", seen at W = 2). On a group per
    bucket each chain is ordered alike on every rank. Groups of equal members, so the
    arithmetic and the bytes are the hook's; buckets may use the link side by side."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import powerSGD_hook

    groups = [dist.new_group() for _ in range(buckets)]  # every rank creates them in this order

    def hook(state, bucket):
        state.process_group = groups[bucket.index() % len(groups)]
        return powerSGD_hook(state, MemberAxisDropped(bucket))

    return hook


class PeerTrainer:
    """The model on one worker with the peer's exchange: `step()` trains one step and
    returns (loss, backward seconds)."""

    def __init__(self, *, peer: str, rank: int | None, spec, ds_config: dict, world_rank: int, world_size: int):
        self.spec, self.rank, self.world_size, self.peer = spec, world_rank, world_size, peer
        self.hyper = population_controller(spec)  # P = 1: the spec's values
        deepspeed = import_deepspeed(use_gpu=False)
        torch.manual_seed(spec.seed)  # identical initial weights on every rank, as trainers.loop
        self.data = build_task_data(spec.task, seed=spec.seed)
        self.model = PopulationTransformer(spec.model, members=1, vocab_size=self.data.vocab_size,
                                           max_seq_len=spec.task.seq_len, causal=self.data.causal,
                                           num_classes=self.data.num_classes, pad_id=self.data.pad_id,
                                           grid=self.data.grid)
        self.model.set_dropout(self._h("dropout"))
        self.optimizer = build_optimizer(self.model, spec.train, members=1, lr_P=self._h("lr"),
                                         weight_decay_P=self._h("weight_decay"))
        plain = [tuple(p.shape[1:]) for p in self.model.parameters()]
        self.bytes_per_step = wire_bytes(plain, peer=peer, rank=rank)
        self.dense_bytes = wire_bytes(plain, peer="ddp", rank=None)
        self.buckets = 1  # DeepSpeed ZeRO 0 reduces after the backward pass: nothing overlaps
        if peer == "deepspeed":  # its own all-reduce: engine.enable_backward_allreduce stays True
            self.engine, self.optimizer, _, _ = deepspeed.initialize(model=self.model, optimizer=self.optimizer,
                                                                     config=ds_config)
            self.train_module = self.engine
        else:
            from torch.nn.parallel import DistributedDataParallel

            self.engine = None
            self.train_module = DistributedDataParallel(self.model)  # torch's default buckets
            self.buckets = ddp_buckets([4 * p.numel() for p in self.model.parameters()])
            if peer == "ddp-powersgd":
                from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook

                self.train_module.register_comm_hook(powerSGD_hook.PowerSGDState(
                    process_group=None, matrix_approximation_rank=rank,
                    start_powerSGD_iter=max(2, spec.compression.warmup_steps)), powersgd_over_gloo(self.buckets))
        torch.manual_seed(spec.seed + 1000 * (world_rank + 1))  # dropout masks differ across ranks
        self.step_index = 0

    def _h(self, name: str) -> torch.Tensor:
        return self.hyper.hyperparams_tensor(name, dtype=torch.float64)

    def step(self) -> tuple[torch.Tensor, float]:
        train = self.spec.train
        self.optimizer.set_hyperparams(
            lr_P=member_learning_rates(self._h("lr"), self._h("warmup"), step=self.step_index,
                                       total_steps=train.steps, schedule=train.lr_schedule,
                                       min_lr_ratio=train.min_lr_ratio),
            weight_decay_P=self._h("weight_decay"))
        inputs, targets = self.data.train_batches(rank=self.rank, world_size=self.world_size, members=1,
                                                  step=self.step_index, batch_size=train.micro_batch_size)
        loss = member_losses(self.train_module(inputs), targets)
        started = time.perf_counter()
        if self.engine is not None:
            self.engine.backward(loss.sum())  # DeepSpeed all-reduces at the end of its backward
        else:
            loss.sum().backward()  # DDP's buckets are all-reduced (or compressed) during it
        backward_s = time.perf_counter() - started
        if train.grad_clip > 0:
            clip_grad_norm_per_member_(self.model.parameters(), train.grad_clip)
        if self.engine is not None:
            self.engine.step()
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step_index += 1
        return loss.detach(), backward_s

    def rebuilt_buckets(self) -> list[int] | None:
        """DDP's bucket sizes after its rebuild (first iterations), as it logs them."""
        if self.engine is not None:
            return None
        sizes = self.train_module._get_ddp_logging_data().get("rebuilt_bucket_sizes")
        return [int(s) for s in sizes.split(",")] if sizes else None

    @torch.no_grad()
    def val_loss(self) -> float:
        """trainers.loop.Worker._evaluate's loss, averaged over every worker's shard."""
        self.model.eval()
        batches = self.data.val_batches(rank=self.rank, world_size=self.world_size,
                                        batch_size=self.spec.train.micro_batch_size,
                                        max_batches=self.spec.train.eval_batches)
        total = sum(float(member_losses(self.model(x[None]), y[None])[0]) for x, y in batches) / len(batches)
        self.model.train()
        return mean_over_workers(total)


def mean_over_workers(value: float) -> float:
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float32)
    dist.all_reduce(tensor)
    return float(tensor[0]) / dist.get_world_size()


def train_peer(config: dict) -> None:
    """One worker (ray_train_entry): every rank trains; rank 0 writes config["out"]."""
    import ray.train

    from launch.runs.files import to_json, write_atomic

    context = ray.train.get_context()
    trainer = PeerTrainer(peer=config["peer"], rank=config["rank"], spec=config["spec"],
                          ds_config=config["ds_config"], world_rank=context.get_world_rank(),
                          world_size=context.get_world_size())
    times, backward, losses = [], [], []
    for _ in range(config["spec"].train.steps):
        started = time.perf_counter()
        loss, backward_s = trainer.step()
        times.append(time.perf_counter() - started)
        backward.append(backward_s)
        losses.append(mean_over_workers(float(loss[0])))  # as sparsepop's rows: averaged over workers
    val_loss = trainer.val_loss()
    if context.get_world_rank() == 0:
        skip = config["skip"]
        rebuilt = trainer.rebuilt_buckets()
        write_atomic(Path(config["out"]), to_json({
            "step_s_all": times, "step_s": statistics.median(times[skip:]),
            "backward_s": statistics.median(backward[skip:]), "losses": losses, "loss": losses[-1],
            "val_loss": val_loss, "bytes_sent": trainer.bytes_per_step, "dense_bytes": trainer.dense_bytes,
            "buckets": len(rebuilt) if rebuilt else trainer.buckets, "rebuilt_bucket_sizes": rebuilt,
            "micro_batch": config["spec"].train.micro_batch_size,
            "tokens_per_step": context.get_world_size() * config["spec"].train.micro_batch_size
            * config["spec"].task.seq_len}) + "\n")


def ray_train_entry(config: dict) -> None:
    """Ray Train's train_loop_per_worker. Ray ships a function of the driver's __main__ by
    value and the modules it names by reference, and a worker's path lacks benchmarks/:
    this one adds it before importing this file as a module."""
    sys.path.insert(0, config["benchmarks"])
    import peer_worker

    peer_worker.train_peer(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", required=True, choices=list(PEERS))
    parser.add_argument("--rank", type=int, default=None, help="matrix_approximation_rank (ddp-powersgd only)")
    parser.add_argument("--spec", default="configs/netns_bench.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec override")
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the medians")
    parser.add_argument("--out", type=Path, required=True, help="the result (JSON), written by rank 0")
    args = parser.parse_args()
    if PEERS[args.peer].takes_rank != (args.rank is not None) or (args.rank is not None and args.rank < 1):
        parser.error(f"--rank: {args.peer} takes " + ("a rank >= 1" if PEERS[args.peer].takes_rank else "none"))
    from launch.spec.deepspeed_config import build_deepspeed_config
    from launch.spec.problems import SpecError, report_spec_error
    from launch.spec.schema import load_spec

    try:
        spec = load_spec(args.spec, args.set)
    except SpecError as err:
        return report_spec_error(err, args.spec)
    if args.skip >= spec.train.steps:
        parser.error(f"--skip {args.skip} leaves no timed step of train.steps={spec.train.steps}")
    if "RAY_ADDRESS" not in os.environ:
        parser.error("RAY_ADDRESS is not set: run it in host 0 of a namespace cluster, as "
                     "benchmarks/bench_cluster.py --peers does")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from launch.backends.ray_rendezvous import BoundTorchConfig

    ray.init(address=os.environ["RAY_ADDRESS"], logging_level="WARNING")
    with tempfile.TemporaryDirectory(prefix="peer-", dir=args.out.parent) as storage:
        TorchTrainer(
            ray_train_entry,
            train_loop_config={"benchmarks": str(REPO / "benchmarks"), "peer": args.peer, "rank": args.rank, "spec": spec, "skip": args.skip,
                               "ds_config": build_deepspeed_config(spec), "out": str(args.out)},
            torch_config=BoundTorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(num_workers=spec.distributed.num_workers, use_gpu=False,
                                         resources_per_worker=spec.distributed.worker_resources()),
            run_config=RunConfig(name=f"peer-{args.peer}", storage_path=storage),
        ).fit()
    print(f"{args.peer} result: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
