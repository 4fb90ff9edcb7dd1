"""Padding is invisible, for every attention kind (ALL_KINDS; kinds added later are
covered automatically): outputs at real positions equal those of the unpadded sequence
computed alone (key mask None, the fast path), whatever the padding holds and however
much of it is appended. Eval mode, so random-feature kinds use fixed features; fp32.

Kinds that need a grid (ripple) see each sequence as one row of pixels, grid (1, T): the
tokens of the unpadded sequence are then the first pixels of that row, at the same
distances from each other. Their grid is fixed when they are built, so they are built for
each length, from the same seed."""
import pytest
import torch

from trainers.attention import ALL_KINDS, BLOCKS, KERNELS
from trainers.attention.grid import requires_grid
from trainers.attention.heads import heads_kwargs
from trainers.config import ModelConfig
from trainers.model import PopulationTransformer

# Small chunks / feature counts so that the lengths below span several chunks.
OPTIONS = {
    "linear": {"chunk_size": 8},
    "performer": {"chunk_size": 8, "nb_features": 16},
    "lara": {"num_landmarks": 4},
    "flash": {"group_size": 8, "qk_dim": 16},
    "collaborative": {"key_dim": 8},
}
LENGTHS = [21, 14, 3]  # real tokens of each sequence; the longest is unpadded at T = 21
EXTRA = [0, 5, 19]  # padding appended beyond T = 21
TOL = {"rtol": 1e-5, "atol": 1e-5}


def cases(registry: dict) -> list:
    return [(kind, causal) for kind, cls in registry.items() for causal in (False, True)
            if cls.supports_causal or not causal]


def case_id(case):
    return f"{case[0]}-{'causal' if case[1] else 'bidir'}"


def attention_config(kind: str):
    return ModelConfig(attention={"kind": kind, **OPTIONS.get(kind, {})}).attention


def row_grid(cls: type, length: int) -> dict:
    """The `grid=` a kind that needs one gets for `length` tokens: one row of pixels."""
    return {"grid": (1, length)} if requires_grid(cls) else {}


def key_mask(length: int) -> torch.Tensor:
    """[len(LENGTHS), length]: True at the real tokens of each sequence."""
    return torch.arange(length) < torch.tensor(LENGTHS)[:, None]


def scramble_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x with its padding positions (mask False along axis -2) replaced by large noise."""
    noise = 5.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    return torch.where(mask.unsqueeze(-1), x, noise)


@pytest.mark.parametrize("extra", EXTRA)
@pytest.mark.parametrize("case", cases(KERNELS), ids=case_id)
def test_kernel_ignores_padding(case, extra):
    kind, causal = case

    def kernel(length: int):
        torch.manual_seed(0)
        return KERNELS[kind](attention_config(kind), members=1, head_dim=8, causal=causal,
                             **row_grid(KERNELS[kind], length), **heads_kwargs(KERNELS[kind], 2)).eval()

    T = max(LENGTHS) + extra
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(len(LENGTHS), 2, T, 8, generator=generator) for _ in range(3))
    mask_NT = key_mask(T)
    mask_N1T = mask_NT.unsqueeze(1)
    padded = kernel(T)(*(scramble_padding(x, mask_N1T) for x in (q, k, v)), mask_NT)
    assert torch.isfinite(padded).all()  # padding rows too: they feed later layers
    for n, length in enumerate(LENGTHS):
        alone = kernel(length)(*(x[n:n + 1, :, :length] for x in (q, k, v)), None)
        torch.testing.assert_close(padded[n:n + 1, :, :length], alone, **TOL)


@pytest.mark.parametrize("extra", EXTRA)
@pytest.mark.parametrize("case", cases(BLOCKS), ids=case_id)
def test_block_ignores_padding(case, extra):
    kind, causal = case
    P, D = 2, 16

    def block(length: int):
        torch.manual_seed(0)
        return BLOCKS[kind](attention_config(kind), members=P, d_model=D, n_layers=2, causal=causal,
                            dropout=0.0, **row_grid(BLOCKS[kind], length)).eval()

    T = max(LENGTHS) + extra
    x_PBTD = torch.randn(P, len(LENGTHS), T, D, generator=torch.Generator().manual_seed(3))
    mask_PBT = key_mask(T).expand(P, -1, -1)
    padded = block(T)(scramble_padding(x_PBTD, mask_PBT), mask_PBT)
    assert torch.isfinite(padded).all()
    for b, length in enumerate(LENGTHS):
        alone = block(length)(x_PBTD[:, b:b + 1, :length], None)
        torch.testing.assert_close(padded[:, b:b + 1, :length], alone, **TOL)


@pytest.mark.parametrize("case", cases(ALL_KINDS), ids=case_id)
def test_model_output_does_not_change_when_padding_is_appended(case):
    """End to end: ids padded with pad_id; the classifier's logits (bidirectional) or the
    LM's logits at real positions (causal) stay put as more padding is appended."""
    kind, causal = case
    pad_id, vocab, max_len = 0, 13, 40
    config = ModelConfig(d_model=32, n_heads=2, n_layers=2, dropout=0.0,
                         attention={"kind": kind, **OPTIONS.get(kind, {})})

    def model(length: int):
        torch.manual_seed(0)
        return PopulationTransformer(config, members=2, vocab_size=vocab, max_seq_len=max_len, causal=causal,
                                     num_classes=None if causal else 5, pad_id=pad_id,
                                     **row_grid(ALL_KINDS[kind], length)).eval()

    tokens = torch.randint(1, vocab, (2, len(LENGTHS), max_len), generator=torch.Generator().manual_seed(1))
    ids_PBT = torch.where(key_mask(max_len), tokens, pad_id)
    reference = model(max(LENGTHS))(ids_PBT[..., :max(LENGTHS)])
    for T in (max(LENGTHS) + 3, max_len):
        logits = model(T)(ids_PBT[..., :T])
        if causal:
            for b, length in enumerate(LENGTHS):
                torch.testing.assert_close(logits[:, b, :length], reference[:, b, :length], **TOL)
        else:
            torch.testing.assert_close(logits, reference, **TOL)


def test_sequence_of_padding_only_stays_finite():
    """The model counts an all-padding sequence as unpadded, so no kernel sees a row
    without a real key (an empty softmax row would be NaN and poison the gradients)."""
    config = ModelConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.0)
    model = PopulationTransformer(config, members=1, vocab_size=5, max_seq_len=8, causal=False, num_classes=3,
                                  pad_id=0)
    ids = torch.tensor([[[0] * 8, [1, 2, 3, 0, 0, 0, 0, 0]]])
    assert model.key_mask(ids)[0, 0].all()
    model(ids).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
