"""Properties every attention kind must have, as a kernel and inside PopulationTransformer:
shapes for P in {1, 3}, member independence, no look-ahead when causal, finite gradients,
and the spec section's parsing. Kinds that need a grid see the T = 21 tokens as a 3 x 7
image."""
import pydantic
import pytest
import torch

from trainers.attention import ALL_KINDS, BLOCKS, KERNELS
from trainers.attention.config import LaraAttentionConfig, LinearAttentionConfig
from trainers.attention.grid import grid_kwargs, requires_grid
from trainers.attention.heads import heads_kwargs
from trainers.config import ModelConfig
from trainers.model import PopulationTransformer

# Small chunks / feature counts so that T = 21 spans several chunks and exercises padding.
OPTIONS = {
    "softmax": {},
    "linear": {"chunk_size": 8},
    "performer": {"chunk_size": 8, "nb_features": 16},
    "lara": {"num_landmarks": 4},
    "vars": {"dictionary": "keys"},  # the default ties keys to queries: k would get no gradient
    "contextpool": {"max_support": 1.5},
    "flash": {"group_size": 8, "qk_dim": 16},
    "rpe_fft": {"max_offset": 8, "pass_buffer_mb": 0.01},  # T = 21: 15 (row, feature) pairs per pass
    "collaborative": {"key_dim": 8},
    "hypercube": {"block_size": 4},
    "mra": {"block_size": 4, "blocks_per_row": 2},
    "ripple": {"rings": 3, "feature_chunk": 3},
}
CLASSES = ALL_KINDS
CASES = [(kind, causal) for kind in OPTIONS for causal in (True, False) if CLASSES[kind].supports_causal or not causal]
CAUSAL_KINDS = [kind for kind, causal in CASES if causal]
KERNEL_CASES = [(kind, causal) for kind, causal in CASES if kind in KERNELS]
VOCAB, CLASSES_OUT, T, B = 13, 5, 21, 2
GRID = (3, 7)  # for the kinds that need one: T tokens as an image


def grid_for(cls: type) -> dict:
    return grid_kwargs(cls, GRID) if requires_grid(cls) else {}


def case_id(case):
    return f"{case[0]}-{'causal' if case[1] else 'bidir'}"


def build_model(kind: str, *, members: int, causal: bool, dropout: float = 0.0) -> PopulationTransformer:
    config = ModelConfig(d_model=32, n_heads=2, n_layers=2, dropout=dropout,
                         attention={"kind": kind, **OPTIONS[kind]})
    torch.manual_seed(0)
    return PopulationTransformer(config, members=members, vocab_size=VOCAB, max_seq_len=32, causal=causal,
                                 num_classes=None if causal else CLASSES_OUT, pad_id=None if causal else 0,
                                 **grid_for(CLASSES[kind]))


def token_ids(members: int) -> torch.Tensor:
    return torch.randint(1, VOCAB, (members, B, T), generator=torch.Generator().manual_seed(1))


# --- through the full model -------------------------------------------------------------

@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_model_output_shape(case, members):
    kind, causal = case
    logits = build_model(kind, members=members, causal=causal).eval()(token_ids(members))
    assert logits.shape == ((members, B, T, VOCAB) if causal else (members, B, CLASSES_OUT))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_members_are_independent(case):
    kind, causal = case
    model = build_model(kind, members=3, causal=causal).eval()
    ids = token_ids(3)
    before = model(ids)
    with torch.no_grad():
        for param in model.parameters():  # every parameter has the leading member axis P
            param[1] += 0.1 * torch.randn_like(param[1])
    after = model(ids)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(after[2], before[2], rtol=0, atol=1e-6)
    assert not torch.allclose(after[1], before[1])


@pytest.mark.parametrize("kind", CAUSAL_KINDS)
def test_model_does_not_look_ahead(kind):
    model = build_model(kind, members=3, causal=True).eval()
    ids = token_ids(3)
    changed = ids.clone()
    changed[:, :, 13] = (changed[:, :, 13] + 1) % VOCAB
    before, after = model(ids), model(changed)
    torch.testing.assert_close(after[:, :, :13], before[:, :, :13], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after[:, :, 13:], before[:, :, 13:])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_model_gradients_flow_and_are_finite(case):
    kind, causal = case
    model = build_model(kind, members=3, causal=causal, dropout=0.1).train()
    model(token_ids(3)).float().square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        # [P, ...] with a feature axis: per-member clipping and the optimizer flatten from axis 1.
        assert param.dim() >= 2 and param.shape[0] == 3, name
    # The first block's attention weights must get a real signal, for every member.
    first = model.blocks[0]
    attn_weight = (first.hidden.weight if kind in BLOCKS else first.attn.query_key.weight if kind == "collaborative"
                   else first.attn.qkv.weight)
    assert (attn_weight.grad.flatten(1).abs().sum(1) > 0).all()


# --- as a kernel ------------------------------------------------------------------------

def make_kernel(kind: str, causal: bool):
    config = ModelConfig(attention={"kind": kind, **OPTIONS[kind]}).attention
    return KERNELS[kind](config, members=3, head_dim=8, causal=causal, **grid_for(KERNELS[kind]),
                         **heads_kwargs(KERNELS[kind], 2))  # qkv()'s H


def qkv(N: int = 3, H: int = 2, length: int = T, K: int = 8, requires_grad: bool = False):
    generator = torch.Generator().manual_seed(2)
    return [torch.randn(N, H, length, K, generator=generator).requires_grad_(requires_grad) for _ in range(3)]


@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_kernel_shape_dtype_and_batch_independence(case):
    kernel = make_kernel(*case).eval()
    q, k, v = qkv()
    out = kernel(q, k, v)
    assert out.shape == q.shape and torch.isfinite(out).all()
    # N folds members and sequences: changing row 1 must leave rows 0 and 2 alone.
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[1] += torch.randn_like(x[1])
    out2 = kernel(q2, k2, v2)
    torch.testing.assert_close(out2[[0, 2]], out[[0, 2]], rtol=0, atol=1e-6)
    # Half-precision inputs come back in their own dtype (fp32 math happens inside).
    assert kernel(*(x.bfloat16() for x in (q, k, v))).dtype == torch.bfloat16


@pytest.mark.parametrize("kind", [kind for kind in CAUSAL_KINDS if kind in KERNELS])
def test_kernel_does_not_look_ahead(kind):
    kernel = make_kernel(kind, causal=True)
    q, k, v = qkv()
    before = kernel(q, k, v)
    for x in (q, k, v):
        x[:, :, 13:] += 3.0 * torch.randn_like(x[:, :, 13:])
    after = kernel(q, k, v)
    torch.testing.assert_close(after[:, :, :13], before[:, :, :13], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_kernel_gradients_flow_and_are_finite(case):
    kernel = make_kernel(*case).train()
    q, k, v = qkv(requires_grad=True)
    kernel(q, k, v).square().sum().backward()
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --- the spec section -------------------------------------------------------------------

def test_every_kind_declares_causal_support_and_lara_refuses_causal():
    assert all(isinstance(cls.supports_causal, bool) for cls in CLASSES.values())
    assert "lara" not in CAUSAL_KINDS
    with pytest.raises(ValueError, match="no causal form"):
        KERNELS["lara"](LaraAttentionConfig(), members=1, head_dim=8, causal=True)


def test_attention_section_parses_by_kind():
    assert ModelConfig().attention.kind == "softmax"
    assert ModelConfig(attention={"kind": "linear"}).attention == LinearAttentionConfig(chunk_size=64)
    with pytest.raises(pydantic.ValidationError, match="does not match any of the expected tags"):
        ModelConfig(attention={"kind": "sofmax"})
    with pytest.raises(pydantic.ValidationError, match="nb_features"):  # an option of another kind
        ModelConfig(attention={"kind": "linear", "nb_features": 32})
    with pytest.raises(pydantic.ValidationError, match="group_size"):
        ModelConfig(attention={"kind": "flash", "group_size": 0})
