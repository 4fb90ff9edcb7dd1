"""The training loop one DeepSpeed worker runs, whoever launched it (Ray Train or mpiexec).

Per step: every member draws its own batch shard [B, T] (stacked to [P, B, T]), the
population-batched model runs forward/backward on the sum of member losses, the
gradient exchange of distrib/ averages the (compressed) gradients across workers, and
DeepSpeed steps the optimizer. Rank 0 reports metric rows and prints progress; every
worker writes its part of each checkpoint.

Members' hyperparameters ([P] tensors: lr, weight_decay, warmup fraction, dropout,
compression density) come from the plan's `population`. After every step the plan's
`rounds` decide and apply PBT's exploit/explore from scores that are identical on all
workers (with pbt.bytes_penalty, each member's bytes sent count against it): every worker
copies the winners' state (weights, optimizer moments and step counters, error-feedback
residuals) onto the losers in place (`Worker.copy_member`) and takes the new
hyperparameters (`Worker.apply_hyperparams`).

What the launcher provides, as the protocols of trainers/contracts.py: the plan's
`population` (HyperparamSource) and `rounds` (PerturbationRounds, trainers/rounds.py for
one group), a `reporter` (rank 0 only) and a `checkpoints` store.
"""
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from compression import CompressionConfig, to_device
from distrib.build_lock import clear_stale_build_locks
from distrib.deepspeed_glue import (
    build_communicator,
    exchange_gradients,
    skip_shared_memory_op,
    take_over_gradient_exchange,
)
from distrib.exchange import GradientExchange
from distrib.overlap import OverlappedExchange, unsupported_reason
from trainers.allocator import keep_freed_memory_for_reuse
from trainers.checkpoint import atomic_save, restore_newest, seal
from trainers.compiling import compile_model
from trainers.config import ModelConfig, TaskConfig, TrainConfig
from trainers.contracts import CheckpointStore, HyperparamSource, PerturbationRounds, Reporter
from trainers.loss_scaler import MemberLossScaler, members_unchanged, overflowing_members, unscale_gradients_
from trainers.model import PopulationTransformer, member_losses
from trainers.optim import build_optimizer
from trainers.population_optim import clip_grad_norm_per_member_, member_learning_rates
from trainers.precision import autocast
from trainers.tasks import build_task_data


def say(line: str) -> None:
    """A progress line on stdout (readable in `ray job logs`). Written directly: Ray
    Train's patched print() would emit it twice (its logger and a tee)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs, and nothing else: the spec sections trainers/ uses."""

    seed: int
    task: TaskConfig
    model: ModelConfig
    train: TrainConfig
    compression: CompressionConfig
    members: int
    deepspeed_config: dict
    backend: str  # distributed.backend: torch | mpi
    checkpoint_interval: int
    use_gpu: bool
    population: HyperparamSource  # members' hyperparameters
    rounds: PerturbationRounds  # how PBT rounds are decided and applied
    pbt_metric: str = "val_loss"  # population.pbt.metric: the score PBT compares


def import_deepspeed(use_gpu: bool):
    # DeepSpeed picks its accelerator at import; on CPU say so instead of letting it probe.
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if use_gpu else "cpu")
    # DeepSpeed JIT-builds ops when it starts; a lock left by a killed build would hang it forever.
    clear_stale_build_locks()
    import deepspeed

    if not use_gpu:
        skip_shared_memory_op(deepspeed)
    return deepspeed


@torch.no_grad()
def copy_member_state_(model: torch.nn.Module, optimizer, exchange: GradientExchange, *, target: int, source: int):
    """Member `target` becomes member `source`, in place, as one consistent state: weights,
    optimizer moments and step counters, error-feedback residuals. Hyperparameters
    (dropout rates included) are the controller's to set; other buffers, such as random
    features, are shared by the whole group and are not per member."""
    for param in model.parameters():
        param[target].copy_(param[source])
    optimizer.copy_member_(target, source)
    exchange.copy_member_(target, source)


def replica_digest(model: torch.nn.Module) -> torch.Tensor:
    """[P] float64 fingerprint of each member's weights: equal on every worker as long as
    the replicas stay in step (written into each worker's checkpoint file)."""
    params = list(model.parameters())
    members = params[0].shape[0]
    return sum(p.detach().double().reshape(members, -1).abs().sum(1) for p in params)


def untimed(phase: str) -> AbstractContextManager:
    return nullcontext()


class Worker:
    """`time_phase(name)`: a context manager around each of a step's "batch", "exchange", "clip"
    and "optimizer" phases (benchmarks time them with it). A Worker that never `run()`s
    (benchmarks) needs no reporter or checkpoints."""

    def __init__(self, plan: WorkerPlan, *, rank: int, world_size: int, reporter: Reporter | None,
                 checkpoints: CheckpointStore | None,
                 time_phase: Callable[[str], AbstractContextManager] = untimed):
        self.plan, self.rank, self.world_size = plan, rank, world_size
        self.reporter = reporter if rank == 0 else None
        self.checkpoints = checkpoints
        self.time_phase = time_phase
        deepspeed = import_deepspeed(plan.use_gpu)
        if not plan.use_gpu:
            keep_freed_memory_for_reuse()
        torch.manual_seed(plan.seed)  # identical initial weights on every rank
        self.data = build_task_data(plan.task, seed=plan.seed)
        model = PopulationTransformer(
            plan.model, members=plan.members, vocab_size=self.data.vocab_size,
            max_seq_len=plan.task.seq_len, causal=self.data.causal,
            num_classes=self.data.num_classes, pad_id=self.data.pad_id, grid=self.data.grid,
            patch_size=self.data.patch_size)
        self.n_params_per_member = sum(p.numel() for p in model.parameters()) // plan.members
        if plan.train.compile:
            compile_model(model)  # in place, before DeepSpeed wraps it: names and state dicts unchanged
        self.population = plan.population
        optimizer = build_optimizer(model, plan.train, members=plan.members,
                                    lr_P=self._hyperparams("lr"), weight_decay_P=self._hyperparams("weight_decay"))
        model.set_dropout(self._hyperparams("dropout"))
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=plan.deepspeed_config)
        take_over_gradient_exchange(self.engine)
        self.comm = build_communicator(plan.backend)
        self.exchange = GradientExchange(config=plan.compression, communicator=self.comm, seed=plan.seed)
        self.overlapped = self._overlapped_exchange()
        self.loss_scaler = MemberLossScaler(plan.members, enabled=plan.train.precision == "fp16",
                                            device=self.engine.device)
        torch.manual_seed(plan.seed + 1000 * (rank + 1))  # dropout masks differ across ranks
        self.step = 0
        self.train_time_s = 0.0  # seconds spent in training steps, carried across restarts
        self.bytes_sent_total = torch.zeros(plan.members, dtype=torch.float64)  # per member, this worker
        self.dense_bytes_total = torch.zeros(plan.members, dtype=torch.float64)
        # [P] losses of the steps since the last logged row, whose mean the next row reports;
        # checkpointed, so that a resumed run's first row averages the same steps.
        self.window_losses: list[torch.Tensor] = []
        self.val_batches = self.data.val_batches(rank=rank, world_size=world_size,
                                                 batch_size=plan.train.micro_batch_size,
                                                 max_batches=plan.train.eval_batches)

    # ------------------------------------------------------------ loop

    def run(self) -> None:
        train = self.plan.train
        self._restore()
        if self.reporter is not None:
            # After a restart, rows logged past the step we resume from will be produced
            # again: drop them (a no-op on a first start).
            self.reporter.rewind(self.step)
            self.reporter.set_info(
                unigram_baseline=getattr(self.data, "unigram_baseline", lambda: None)(),
                params_per_member=self.n_params_per_member, world_size=self.world_size,
                members=self.plan.members, initial_hyperparams=self.population.initial)
        tokens_per_step = (train.micro_batch_size * train.grad_accum_steps * self.world_size
                           * self.plan.task.seq_len)
        window_start = time.perf_counter()
        rounds = self.plan.rounds
        stop = rounds.begin(self)
        while self.step < stop:
            lr_P = self._set_step_rates()
            step_started = time.perf_counter()
            loss_P, bytes_report = self.train_step()
            self.train_time_s += time.perf_counter() - step_started
            # Every step, so that a diverged member is seen (and replaced) at once, with the
            # same numbers on every worker.
            loss_P = self._mean_across_workers(loss_P)
            self.window_losses.append(loss_P)
            done = self.step == stop
            round_due = rounds.is_round(self.step)
            evaluate = (self.step % train.eval_interval == 0 or done
                        or (round_due and self.plan.pbt_metric == "val_loss"))
            val_loss_P, val_accuracy_P = self._evaluate() if evaluate else (None, None)
            if self.step % train.log_interval == 0 or evaluate:
                elapsed = time.perf_counter() - window_start
                tokens_per_s = len(self.window_losses) * tokens_per_step / elapsed
                self._log(lr_P, torch.stack(self.window_losses).mean(0).cpu(), val_loss_P, val_accuracy_P,
                          self.step * tokens_per_step, bytes_report, tokens_per_s)
                window_start, self.window_losses = time.perf_counter(), []
            use_val = self.plan.pbt_metric == "val_loss" and val_loss_P is not None
            rounds.after_step(self, val_loss_P if use_val else loss_P, bytes_report)
            if self.step % self.plan.checkpoint_interval == 0 or done:
                self.checkpoints.save(self.step, self._write_checkpoint_files)

    def train_step(self):
        """One optimizer step (grad_accum_steps micro-steps) at the optimizer's current
        hyperparameters; advances `step`. Returns the mean loss per member on this worker
        (where the model is) and the exchange's byte report."""
        train = self.plan.train
        losses, report = [], None
        for micro in range(train.grad_accum_steps):
            with self.time_phase("batch"):
                inputs_PBT, targets_PB = self._train_batches(sample=self.step * train.grad_accum_steps + micro)
            with autocast(train.precision, self.engine.device):
                logits = self.engine(inputs_PBT)
            loss_P = member_losses(logits, targets_PB)  # in fp32
            boundary = self.engine.is_gradient_accumulation_boundary()  # counted in engine.step()
            # Each member sends its own density (PBT's, copied on exploit like the rest).
            density_P = self._hyperparams("density").tolist()
            if boundary and self.overlapped is not None:  # exchange buckets as backward finishes them
                self.overlapped.arm(step=self.step, density_P=density_P)
            # Sum over members: each member's gradient is what it would be on its own (times
            # its loss scale under fp16).
            self.engine.backward(self.loss_scaler.scale(loss_P).sum())
            skipped_members = []
            if boundary:
                if self.loss_scaler.enabled:
                    # Before the exchange: see trainers/loss_scaler.py.
                    overflow_P = unscale_gradients_(self.loss_scaler, self.engine.module.parameters(), self.comm)
                    skipped_members = overflowing_members(overflow_P)
                with self.time_phase("exchange"):  # overlapped: what backward left to wait for
                    report = (self.overlapped.finish() if self.overlapped is not None else
                              exchange_gradients(self.engine, self.exchange, step=self.step, density_P=density_P))
                self.bytes_sent_total += torch.tensor(report.bytes_sent_P, dtype=torch.float64)
                self.dense_bytes_total += report.dense_bytes
                if train.grad_clip > 0:
                    with self.time_phase("clip"):
                        # Per member: one member's large gradient must not shrink the others'.
                        clip_grad_norm_per_member_(self.engine.module.parameters(), train.grad_clip)
            with self.time_phase("optimizer"), members_unchanged(self.engine.module, self.optimizer, skipped_members):
                self.engine.step()
            if self.loss_scaler.enabled and boundary:
                self.loss_scaler.update(overflow_P)
            losses.append(loss_P.detach())
        self.step += 1
        return torch.stack(losses).mean(0), report  # on the device: read at log steps only

    def _overlapped_exchange(self) -> OverlappedExchange | None:
        """The exchange during backward (`compression.overlap`), where it gives the same
        result as after it; None: after backward, said once on rank 0 when overlap was asked."""
        plan = self.plan
        if not plan.compression.overlap:
            return None
        # fp16: a member that overflows anywhere sends zeros everywhere (trainers/loss_scaler.py),
        # known only once the whole backward pass is done.
        reason = ("train.precision fp16 checks every gradient for overflow before any is sent"
                  if plan.train.precision == "fp16" else unsupported_reason(plan.compression))
        if reason is None:
            return OverlappedExchange(self.exchange, self.engine.module.named_parameters())
        if self.rank == 0:
            say(f"[exchange] after the backward pass (compression.overlap has no effect): {reason}")
        return None

    def _train_batches(self, *, sample: int):
        """Every member's batch of micro-step `sample`, built as one tensor on the host and
        copied to the engine's device; on a GPU from pinned memory without blocking, so the
        copy overlaps the host's work until the forward pass needs it."""
        inputs, targets = self.data.train_batches(rank=self.rank, world_size=self.world_size,
                                                  members=self.plan.members, step=sample,
                                                  batch_size=self.plan.train.micro_batch_size)
        return to_device(inputs, self.engine.device), to_device(targets, self.engine.device)

    @torch.no_grad()
    def _evaluate(self):
        """Validation loss per member, and the accuracy per member for classification tasks
        (None for language modelling): means over every example of every worker's validation
        shard, so a short last batch (or a shorter shard) counts by its examples."""
        self.engine.eval()
        members, device = self.plan.members, self.engine.device
        # Summed on the device: one copy to the host at the end, not two per batch.
        loss_P, correct_P = torch.zeros(members, device=device), torch.zeros(members, device=device)
        examples = 0
        for inputs_BT, targets_B in self.val_batches:
            inputs_PBT = inputs_BT.expand(members, *inputs_BT.shape).to(device)
            targets = targets_B.expand(members, *targets_B.shape).to(device)
            with autocast(self.plan.train.precision, device):
                logits = self.engine(inputs_PBT)
            batch = len(targets_B)
            loss_P += member_losses(logits, targets).float() * batch
            correct_P += (logits.argmax(-1) == targets).float().reshape(members, -1).mean(1) * batch
            examples += batch
        self.engine.train()
        # One all-reduce of [loss sums, correct sums, examples].
        sums = torch.cat([loss_P.cpu(), correct_P.cpu(), torch.tensor([float(examples)])])
        self.comm.all_reduce_sum_(sums)
        val_loss_P, accuracy_P = sums[:members] / sums[-1], sums[members:-1] / sums[-1]
        return val_loss_P, accuracy_P if self.data.num_classes else None

    def _hyperparams(self, name: str) -> torch.Tensor:
        return self.population.hyperparams_tensor(name, dtype=torch.float64)

    def apply_hyperparams(self) -> None:
        """The population's hyperparameters changed (a round, a restore): give them to the
        model (dropout) and the optimizer."""
        self.engine.module.set_dropout(self._hyperparams("dropout"))
        self._set_step_rates()

    def _set_step_rates(self) -> torch.Tensor:
        """Give the optimizer this step's learning rate (schedule applied) and weight decay
        of every member; returns lr_P."""
        train = self.plan.train
        lr_P = member_learning_rates(self._hyperparams("lr"), self._hyperparams("warmup"), step=self.step,
                                     total_steps=train.steps, schedule=train.lr_schedule,
                                     min_lr_ratio=train.min_lr_ratio)
        self.optimizer.set_hyperparams(lr_P=lr_P, weight_decay_P=self._hyperparams("weight_decay"))
        return lr_P

    @torch.no_grad()
    def copy_member(self, *, target: int, source: int) -> None:
        """Member `target` becomes member `source` (copy_member_state_), its fp16 loss
        scale included (the scale fits the weights it comes with)."""
        copy_member_state_(self.engine.module, self.optimizer, self.exchange, target=target, source=source)
        self.loss_scaler.copy_member_(target, source)

    def _mean_across_workers(self, value_P: torch.Tensor) -> torch.Tensor:
        value_P = value_P.to(torch.float32).clone()
        self.comm.all_reduce_sum_(value_P)
        return value_P / self.world_size

    # ------------------------------------------------------------ output

    def _log(self, lr_P, loss_P, val_loss_P, val_accuracy_P, tokens, bytes_report, tokens_per_s) -> None:
        if self.reporter is None:
            return
        rows = []
        for member in range(self.plan.members):
            row = {"step": self.step, "member": member, "loss": float(loss_P[member]), "lr": float(lr_P[member]),
                   "tokens": tokens, "bytes_sent": bytes_report.bytes_sent_P[member],
                   "dense_bytes": bytes_report.dense_bytes,
                   "bytes_sent_total": int(self.bytes_sent_total[member]),
                   "dense_bytes_total": int(self.dense_bytes_total[member]),
                   "tokens_per_s": tokens_per_s, "time_s": self.train_time_s,
                   "hyperparams": self.population.member_hyperparams(member)}
            if val_loss_P is not None:
                row["val_loss"] = float(val_loss_P[member])
            if val_accuracy_P is not None:
                row["val_accuracy"] = float(val_accuracy_P[member])
            rows.append(row)
        self.reporter.log(rows)
        val = "" if val_loss_P is None else f" val_loss {val_loss_P.mean():.4f}"
        val += "" if val_accuracy_P is None else f" val_accuracy {val_accuracy_P.mean():.3f}"
        say(f"[step {self.step}/{self.plan.train.steps}] loss {loss_P.mean():.4f}{val} "
            f"lr {lr_P.mean():.2e} | {tokens_per_s:,.0f} tok/s | sent {bytes_report.ratio:.2%} of dense")

    # ------------------------------------------------------------ checkpoints

    def _write_checkpoint_files(self, folder: Path) -> None:
        """Rank 0 writes the weights and counters; every rank its optimizer state, RNG states
        (the CPU's and every GPU's: dropout masks), error-feedback residuals (they differ per
        worker) and the members' fp16 loss scales."""
        names = [f"worker_rank{self.rank}.pt"] + (["model.pt"] if self.rank == 0 else [])
        if self.rank == 0:
            atomic_save({"step": torch.tensor(self.step), "train_time_s": torch.tensor(self.train_time_s),
                         "model": self.engine.module.state_dict(), "population": self.population.state_dict(),
                         "log_window": torch.stack(self.window_losses).cpu() if self.window_losses
                         else torch.zeros(0, self.plan.members)},
                        folder / "model.pt")
        atomic_save({"optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                     "loss_scaler": self.loss_scaler.state_dict(),
                     "replica_digest": replica_digest(self.engine.module),
                     "exchange": self.exchange.state_dict(),
                     "bytes_sent_total": self.bytes_sent_total, "dense_bytes_total": self.dense_bytes_total},
                    folder / f"worker_rank{self.rank}.pt")
        # Last: the checkpoint counts as complete once every rank's seal is there (trainers/checkpoint.py).
        seal(folder, rank=self.rank, world_size=self.world_size, step=self.step, names=names)

    def _restore(self) -> None:
        """From the newest checkpoint every rank reads intact: a corrupt or incomplete one is
        named and skipped for the one before (trainers/checkpoint.py: restore_newest)."""
        with self.checkpoints.latest() as folder:
            if folder is None:
                return
            state, worker_state = restore_newest(
                Path(folder), lambda: self.checkpoints.earlier(Path(folder)), rank=self.rank,
                all_agree=lambda ok: bool(self._mean_across_workers(torch.tensor([float(ok)]))[0] == 1.0), say=say)
        self.engine.module.load_state_dict(state["model"])  # includes each member's dropout rate
        self.population.load_state_dict(state["population"])
        self.optimizer.load_state_dict(worker_state["optimizer"])  # includes each member's learning rate
        torch.set_rng_state(worker_state["rng"])
        # Checkpoints written before mixed precision hold neither entry: keep the fresh state.
        if worker_state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(worker_state["cuda_rng"])
        if "loss_scaler" in worker_state:
            self.loss_scaler.load_state_dict(worker_state["loss_scaler"])
        self.exchange.load_state_dict(worker_state["exchange"])
        self.bytes_sent_total = worker_state["bytes_sent_total"]
        self.dense_bytes_total = worker_state["dense_bytes_total"]
        self.step = int(state["step"])
        self.train_time_s = float(state["train_time_s"])
        # Checkpoints written before the window was kept hold none: the window restarts here.
        window = state.get("log_window", torch.zeros(0, self.plan.members))
        self.window_losses = list(window.to(self.engine.device).unbind(0))
        # The model's dropout rates and the optimizer's learning rates and weight decays came
        # with the checkpoint: the population's rule (they differ after a Tune PBT exploit).
        self.apply_hyperparams()
        if self.rank == 0:
            say(f"[restore] resuming from the checkpoint at step {self.step}")
