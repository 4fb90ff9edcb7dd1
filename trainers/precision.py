"""`train.precision`: the forward pass under torch.autocast (bf16 or fp16), with fp32
master weights and fp32 gradients, so the gradient exchange, its error-feedback residuals
and the population optimizer all stay in fp32. The loss is taken in fp32 (member_losses
casts the logits). fp16 also needs a loss scale per member (trainers/loss_scaler.py).
"""
from contextlib import AbstractContextManager, nullcontext

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager:
    """The context of a forward pass at `precision` on `device` ("cpu" or "cuda"); fp32: none."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=AUTOCAST_DTYPES[precision])
