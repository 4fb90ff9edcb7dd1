"""Population overhead: one training step of P members in one population-batched model
against P separate single-member models stepped one after another (the quickstart
model: width 128, 2 layers, 4 heads, 16 sequences of 128 bytes per member).

    .venv/bin/python benchmarks/bench_population.py [--members 1 2 4 8 16 32] [--device cuda]

Prints, per P: the batched step time, the sequential loop's time, and
time(P) / (P x time(1)) for both (1.0 = no gain from batching; the Flajolet et al. goal is
far below 1 on an accelerator). Median over --repeats steps after warm-up.
"""
import argparse
import statistics
import time

import torch

from trainers.allocator import keep_freed_memory_for_reuse
from trainers.config import ModelConfig, TrainConfig
from trainers.model import PopulationTransformer, member_losses
from trainers.optim import build_optimizer


def make_group(members: int, args, device):
    model = PopulationTransformer(ModelConfig(d_model=128, n_layers=2, n_heads=4), members=members,
                                  vocab_size=256, max_seq_len=args.seq_len, causal=True).to(device)
    optimizer = build_optimizer(model, TrainConfig(), members=members, lr_P=torch.full((members,), 1e-3),
                                weight_decay_P=torch.zeros(members))
    return model, optimizer


def step(model, optimizer, ids_PBT):
    loss_P = member_losses(model(ids_PBT[..., :-1]), ids_PBT[..., 1:])
    loss_P.sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn, args, device) -> float:
    for _ in range(args.warmup):
        fn()
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory_for_reuse()  # as the training workers do
    torch.manual_seed(0)
    single_model, single_opt = make_group(1, args, device)
    ids_1BT = torch.randint(0, 256, (1, args.batch, args.seq_len + 1), device=device)
    # Timed twice, the first one thrown away: the process's first steps also pay for lazy
    # initialisation and the heap growing, which would make every ratio look better.
    time_1 = [timed(lambda: step(single_model, single_opt, ids_1BT), args, device) for _ in range(2)][-1]
    print(f"device {device}, batch {args.batch} x {args.seq_len} tokens per member; time(1) = {time_1 * 1e3:.1f} ms\n")
    print(f"{'P':>4}{'batched ms':>13}{'sequential ms':>16}{'batched/(P*t1)':>17}{'sequential/(P*t1)':>20}")
    for members in args.members:
        model, optimizer = make_group(members, args, device)
        ids_PBT = torch.randint(0, 256, (members, args.batch, args.seq_len + 1), device=device)
        batched = timed(lambda: step(model, optimizer, ids_PBT), args, device)
        del model, optimizer
        singles = [make_group(1, args, device) for _ in range(members)]
        sequential = timed(lambda: [step(m, o, ids_PBT[i:i + 1]) for i, (m, o) in enumerate(singles)], args, device)
        del singles
        print(f"{members:>4}{batched * 1e3:>13.1f}{sequential * 1e3:>16.1f}{batched / (members * time_1):>17.2f}"
              f"{sequential / (members * time_1):>20.2f}")


if __name__ == "__main__":
    main()
