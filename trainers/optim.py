"""The group's optimizer: a population optimizer whose hyperparameters are [P] tensors,
so every member has its own learning rate, weight decay and schedule (P = 1 is plain
AdamW / SGD with momentum)."""
import torch

from trainers.config import TrainConfig
from trainers.population_optim import PopulationAdamW, PopulationSGD


def build_optimizer(model: torch.nn.Module, train: TrainConfig, *, members: int,
                    lr_P: torch.Tensor, weight_decay_P: torch.Tensor) -> torch.optim.Optimizer:
    if train.optimizer == "adamw":
        return PopulationAdamW(model.parameters(), members=members, lr_P=lr_P, weight_decay_P=weight_decay_P,
                               betas=train.betas)
    return PopulationSGD(model.parameters(), members=members, lr_P=lr_P, weight_decay_P=weight_decay_P,
                         momentum=train.momentum)
