"""`train.compile`: the population model through torch.compile equals the eager model.

The fast tests use the "aot_eager" backend: torch.compile's graph capture and its compiled
backward, without inductor's code generation, which takes 1-2 minutes on 2 cores before
its cache is warm. The inductor test is marked slow (SPARSEPOP_SLOW=1 runs it).
"""
import pytest
import torch

import trainers.compiling
from trainers.compiling import compile_model
from trainers.config import ModelConfig
from trainers.model import PopulationTransformer, member_losses
from trainers.population_optim import PopulationAdamW

P, B, T = 2, 3, 32


def tiny_model() -> PopulationTransformer:
    torch.manual_seed(0)
    config = ModelConfig(d_model=32, n_layers=2, n_heads=2, dropout=0.0)
    return PopulationTransformer(config, members=P, vocab_size=64, max_seq_len=T, causal=True)


def train_steps(model, steps: int = 2) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Losses and the last logits of `steps` AdamW steps on fixed batches."""
    optimizer = PopulationAdamW(model.parameters(), members=P, lr_P=[1e-2, 3e-3])
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        ids = torch.randint(0, 64, (P, B, T), generator=gen)
        logits = model(ids)
        loss_P = member_losses(logits, ids)
        loss_P.sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss_P.detach())
    return losses, logits.detach()


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(trainers.compiling, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_training_equals_eager_training(aot_eager):
    eager, compiled = tiny_model(), tiny_model()
    names = [name for name, _ in compiled.named_parameters()]
    compile_model(compiled)
    assert [name for name, _ in compiled.named_parameters()] == names  # checkpoints and exports unchanged
    eager_losses, eager_logits = train_steps(eager)
    compiled_losses, compiled_logits = train_steps(compiled)
    # Same graph, run by the same eager kernels: equal within float32 rounding.
    for a, b in zip(eager_losses, compiled_losses):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    torch.testing.assert_close(compiled_logits, eager_logits, rtol=0, atol=1e-5)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_inductor_logits_equal_eager_logits_and_a_step_trains():
    torch._dynamo.reset()
    eager, compiled = tiny_model(), tiny_model()
    compile_model(compiled)  # inductor: C++ kernels on CPU
    eager_losses, eager_logits = train_steps(eager)
    compiled_losses, compiled_logits = train_steps(compiled)
    # Fused kernels reorder float32 sums: close, not equal.
    torch.testing.assert_close(compiled_logits, eager_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled_losses[1], eager_losses[1], rtol=1e-4, atol=1e-4)  # after a step
