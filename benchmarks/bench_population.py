"""Population overhead: one training step of P members in one population-batched model
against P separate single-member models stepped one after another (the dense baseline
model: width 128, 2 layers, 4 heads, 16 sequences of 128 bytes per member).

    .venv/bin/python benchmarks/bench_population.py [--members 1 2 4 8 16 32] [--device cuda] [--bf16]

Prints, per P: the batched step time, the sequential loop's time, and
time(P) / (P x time(1)) for both (1.0 = no gain from batching; the Flajolet et al. goal is
far below 1 on an accelerator). Median over --repeats steps after warm-up.
"""
import argparse
import contextlib
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.allocator import keep_freed_memory_for_reuse  # noqa: E402
from trainers.config import ModelConfig, TrainConfig  # noqa: E402
from trainers.model import PopulationTransformer, member_losses  # noqa: E402
from trainers.optim import build_optimizer  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """The model and the batch of one member (default: configs/baseline_dense.yaml's)."""

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    batch: int = 16
    seq_len: int = 128


def make_group(members: int, sizes: Sizes, device):
    model = PopulationTransformer(ModelConfig(d_model=sizes.d_model, n_layers=sizes.n_layers, n_heads=sizes.n_heads),
                                  members=members, vocab_size=256, max_seq_len=sizes.seq_len, causal=True).to(device)
    optimizer = build_optimizer(model, TrainConfig(), members=members, lr_P=torch.full((members,), 1e-3),
                                weight_decay_P=torch.zeros(members))
    return model, optimizer


def step(model, optimizer, ids_PBT, autocast_dtype=None):
    """One training step; under torch.autocast when `autocast_dtype` is given (bf16, fp16)."""
    device_type = ids_PBT.device.type
    precision = (torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype is not None
                 else contextlib.nullcontext())
    with precision:
        loss_P = member_losses(model(ids_PBT[..., :-1]), ids_PBT[..., 1:])
    loss_P.sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn, device, *, warmup: int, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def population_overhead(members_list, sizes: Sizes, device, *, warmup: int = 2, repeats: int = 5,
                        sequential: bool = True, autocast_dtype=None):
    """time(1), then per P a row {P, batched_s, sequential_s (None if not asked), batched_ratio,
    sequential_ratio}, the ratios being time / (P x time(1)); also the parameters per member."""
    if device.type == "cpu":
        keep_freed_memory_for_reuse()  # as the training workers do
    torch.manual_seed(0)
    run = lambda model, opt, ids: step(model, opt, ids, autocast_dtype)  # noqa: E731
    single_model, single_opt = make_group(1, sizes, device)
    params = sum(p.numel() for p in single_model.parameters())
    ids_1BT = torch.randint(0, 256, (1, sizes.batch, sizes.seq_len + 1), device=device)
    # Timed twice, the first one thrown away: the process's first steps also pay for lazy
    # initialisation and the heap growing, which would make every ratio look better.
    time_1 = [timed(lambda: run(single_model, single_opt, ids_1BT), device, warmup=warmup, repeats=repeats)
              for _ in range(2)][-1]
    del single_model, single_opt
    rows = []
    for members in members_list:
        model, optimizer = make_group(members, sizes, device)
        ids_PBT = torch.randint(0, 256, (members, sizes.batch, sizes.seq_len + 1), device=device)
        batched = timed(lambda: run(model, optimizer, ids_PBT), device, warmup=warmup, repeats=repeats)
        del model, optimizer
        seq = None
        if sequential:
            singles = [make_group(1, sizes, device) for _ in range(members)]
            seq = timed(lambda: [run(m, o, ids_PBT[i:i + 1]) for i, (m, o) in enumerate(singles)], device,
                        warmup=warmup, repeats=repeats)
            del singles
        rows.append({"P": members, "batched_s": batched, "sequential_s": seq,
                     "batched_ratio": batched / (members * time_1),
                     "sequential_ratio": None if seq is None else seq / (members * time_1)})
    return {"time_1_s": time_1, "params_per_member": params, "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="run each step under torch.autocast(bfloat16)")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = Sizes(batch=args.batch, seq_len=args.seq_len)
    result = population_overhead(args.members, sizes, device, warmup=args.warmup, repeats=args.repeats,
                                 autocast_dtype=torch.bfloat16 if args.bf16 else None)
    print(f"device {device}, batch {args.batch} x {args.seq_len} tokens per member; "
          f"time(1) = {result['time_1_s'] * 1e3:.1f} ms\n")
    print(f"{'P':>4}{'batched ms':>13}{'sequential ms':>16}{'batched/(P*t1)':>17}{'sequential/(P*t1)':>20}")
    for row in result["rows"]:
        print(f"{row['P']:>4}{row['batched_s'] * 1e3:>13.1f}{row['sequential_s'] * 1e3:>16.1f}"
              f"{row['batched_ratio']:>17.2f}{row['sequential_ratio']:>20.2f}")


if __name__ == "__main__":
    main()
