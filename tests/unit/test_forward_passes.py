"""forward_backward: a micro-batch cut into passes gives the gradients and losses of one pass."""
import pytest
import torch

from trainers.config import ModelConfig
from trainers.model import PopulationTransformer, forward_backward, pass_count


def grads_and_loss(max_tokens, *, num_classes=None):
    torch.manual_seed(0)
    model = PopulationTransformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, dropout=0.0), members=3,
                                  vocab_size=40, max_seq_len=16, causal=num_classes is None,
                                  num_classes=num_classes, pad_id=0)
    inputs_PBT = torch.randint(1, 40, (3, 5, 16))
    targets = torch.randint(0, num_classes, (3, 5)) if num_classes else torch.randint(0, 40, (3, 5, 16))
    loss_P = forward_backward(model, torch.Tensor.backward, inputs_PBT, targets, max_tokens=max_tokens)
    return {n: p.grad.clone() for n, p in model.named_parameters()}, loss_P


@pytest.mark.parametrize("num_classes", [None, 4])
@pytest.mark.parametrize("max_tokens", [16, 100, 3 * 2 * 16])
def test_passes_match_one_pass(max_tokens, num_classes):
    one_grads, one_loss = grads_and_loss(None, num_classes=num_classes)
    cut_grads, cut_loss = grads_and_loss(max_tokens, num_classes=num_classes)
    torch.testing.assert_close(cut_loss, one_loss, rtol=1e-5, atol=1e-6)
    for name, grad in one_grads.items():
        torch.testing.assert_close(cut_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_pass_count():
    ids = torch.zeros(4, 8, 128, dtype=torch.long)  # 4096 tokens
    assert pass_count(ids, None) == 1
    assert pass_count(ids, 4096) == 1
    assert pass_count(ids, 4095) == 2
    assert pass_count(ids, 1000) == 5  # near-equal parts of the 8 sequences
    assert pass_count(ids, 1) == 8  # never less than one sequence per pass
