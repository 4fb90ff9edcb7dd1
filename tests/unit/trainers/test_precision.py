"""train.precision: bf16 / fp16 autocast (CPU here) trains as fp32 does, within a few
percent of the loss, with fp32 weights and gradients."""
import pytest
import torch

from trainers.config import ModelConfig, TrainConfig
from trainers.loss_scaler import MemberLossScaler, members_unchanged, unscale_gradients_
from trainers.model import PopulationTransformer, member_losses
from trainers.optim import build_optimizer
from trainers.precision import autocast

P, VOCAB, T, STEPS = 2, 16, 16, 30


class NoWorkers:
    @staticmethod
    def all_reduce_sum_(tensor):
        return tensor


def structured_batches():
    """Sequences counting up mod VOCAB from a random start: a pattern a tiny model learns fast."""
    generator = torch.Generator().manual_seed(0)
    starts = torch.randint(0, VOCAB, (STEPS, P, 4, 1), generator=generator)
    return (starts + torch.arange(T + 1)) % VOCAB


def final_loss(precision: str) -> float:
    torch.manual_seed(0)
    model = PopulationTransformer(ModelConfig(d_model=32, n_layers=1, n_heads=2), members=P, vocab_size=VOCAB,
                                  max_seq_len=T, causal=True)
    optimizer = build_optimizer(model, TrainConfig(), members=P, lr_P=torch.full((P,), 3e-3),
                                weight_decay_P=torch.zeros(P))
    scaler = MemberLossScaler(P, enabled=precision == "fp16")
    losses = []
    for ids in structured_batches():
        with autocast(precision, "cpu"):
            logits = model(ids[..., :-1])
        loss_P = member_losses(logits, ids[..., 1:])
        assert loss_P.dtype == torch.float32
        scaler.scale(loss_P).sum().backward()
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())  # fp32 master gradients
        overflow_P = unscale_gradients_(scaler, model.parameters(), NoWorkers) if scaler.enabled else None
        with members_unchanged(model, optimizer, [] if overflow_P is None else overflow_P.nonzero().flatten().tolist()):
            optimizer.step()
        if scaler.enabled:
            scaler.update(overflow_P)
        optimizer.zero_grad()
        losses.append(loss_P.mean().item())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return sum(losses[-5:]) / 5


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_loss_is_close_to_fp32(precision):
    fp32 = final_loss("fp32")
    assert fp32 < 0.8 * torch.log(torch.tensor(float(VOCAB))).item()  # it learned something
    assert final_loss(precision) == pytest.approx(fp32, rel=0.03)


def test_autocast_runs_the_forward_in_the_chosen_dtype():
    x = torch.randn(2, 4, 4)
    with autocast("bf16", "cpu"):
        assert torch.bmm(x, x).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert torch.bmm(x, x).dtype == torch.float32
