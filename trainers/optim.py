"""Optimizer and learning-rate schedule of a group."""
import math

import torch

from trainers.config import TrainConfig


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on norms and biases (vectors per member: 2-D [P, D] tensors).
    decay = [p for p in model.parameters() if p.dim() > 2]
    no_decay = [p for p in model.parameters() if p.dim() <= 2]
    groups = [{"params": decay, "weight_decay": train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=train.lr, betas=train.betas)
    return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum)


def learning_rate(train: TrainConfig, step: int) -> float:
    """Linear warm-up to train.lr, then constant or cosine decay to min_lr_ratio * lr."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.lr_schedule == "constant":
        return train.lr
    progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
    floor = train.min_lr_ratio * train.lr
    return floor + (train.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
