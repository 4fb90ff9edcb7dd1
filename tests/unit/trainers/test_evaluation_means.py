"""Worker._evaluate averages over examples, not batches: a short last batch counts by its
examples. Run on a one-rank MPI communicator with a model whose predictions are known."""
import math
from types import SimpleNamespace

import torch
from torch import nn

from distrib.communicators import MpiCommunicator
from trainers.loop import Worker

CLASSES = 4


class FirstTokenClassifier(nn.Module):
    """Logits [P, B, C] that predict each sequence's first token with known confidence."""

    device = torch.device("cpu")

    def forward(self, inputs_PBT):
        return 3.0 * nn.functional.one_hot(inputs_PBT[..., 0], CLASSES).float()


def test_accuracy_and_loss_are_means_over_examples():
    full = (torch.tensor([[0, 1], [1, 1], [2, 0], [3, 3]]), torch.tensor([0, 1, 2, 3]))  # 4 right
    short = (torch.tensor([[0, 2]]), torch.tensor([1]))  # 1 wrong
    worker = SimpleNamespace(engine=FirstTokenClassifier(), plan=SimpleNamespace(members=2, train=SimpleNamespace(
        precision="fp32")), val_batches=[full, short], comm=MpiCommunicator(), data=SimpleNamespace(num_classes=CLASSES))
    val_loss_P, accuracy_P = Worker._evaluate(worker)
    assert torch.allclose(accuracy_P, torch.full((2,), 0.8))  # the mean of the two batches would be 0.5
    right = -math.log(math.exp(3.0) / (math.exp(3.0) + CLASSES - 1))
    wrong = -math.log(1.0 / (math.exp(3.0) + CLASSES - 1))
    assert torch.allclose(val_loss_P, torch.full((2,), (4 * right + wrong) / 5))
