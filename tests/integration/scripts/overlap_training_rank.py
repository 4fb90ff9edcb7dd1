"""One rank of tests/integration/test_overlap_training.py: run 2 of them on loopback gloo.

    python overlap_training_rank.py --rank R --world-size 2 --port P --outdir D --set KEY=VALUE ...

Builds two workers of the real loop (trainers/loop.py: DeepSpeed engine, our optimizer,
the exchange) on configs/tiny.yaml with the overrides given, one with
`compression.overlap: false` and one with `true`, and steps them side by side. Saves to
`D/rank{R}.pt`, per step: both workers' losses and byte reports, and whether their weights,
optimizer state and error-feedback residuals are bit-identical.
"""
import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root

from launch.backends.plan import worker_plan
from launch.spec.deepspeed_config import build_deepspeed_config
from launch.spec.schema import load_spec
from trainers.loop import Worker, import_deepspeed

STEPS = 3


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("--rank", "--world-size", "--port"):
        ap.add_argument(name, type=int, required=True)
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    os.environ.update(RANK=str(args.rank), WORLD_SIZE=str(args.world_size), LOCAL_RANK="0",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port))
    torch.set_num_threads(1)
    # Validated before torch.distributed starts: DeepSpeed's config check reads its world size.
    specs = {overlap: load_spec("configs/tiny.yaml", [*args.set, f"compression.overlap={str(overlap).lower()}"])
             for overlap in (False, True)}
    import_deepspeed(False).init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    workers = {overlap: Worker(worker_plan(spec, build_deepspeed_config(spec)), rank=args.rank,
                               world_size=args.world_size, reporter=None, checkpoints=None)
               for overlap, spec in specs.items()}
    after, during = workers[False], workers[True]
    steps = []
    for _ in range(STEPS):
        (loss_after, report_after), (loss_during, report_during) = after.train_step(), during.train_step()
        steps.append({
            "overlapped": (after.overlapped is None, during.overlapped is not None),
            "loss": (loss_after, loss_during),
            "bytes": (report_after.as_dict(), report_during.as_dict()),
            "weights_equal": same_tensors(after.engine.module.state_dict(), during.engine.module.state_dict()),
            "residuals_equal": same_tensors(after.exchange.state_dict(), during.exchange.state_dict()),
            "optimizer_equal": same_tensors(*(_flat(w.optimizer.state_dict()) for w in (after, during))),
        })
    torch.save(steps, Path(args.outdir) / f"rank{args.rank}.pt")
    torch.distributed.destroy_process_group()


def _flat(state, prefix="") -> dict:
    """Every tensor of a nested optimizer state dict, by its path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in _flat(value, f"{prefix}.{key}").items()}


if __name__ == "__main__":
    main()
