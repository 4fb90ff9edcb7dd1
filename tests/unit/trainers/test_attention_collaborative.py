"""collaborative: with key_dim = d_model and concatenate mixing it reproduces a softmax block
built from the same weights (the reference's reparametrization); padded keys are ignored;
the parameter saving at key_dim = d_model / 4."""
import pytest
import torch

from trainers.attention.collaborative import CollaborativeAttention, mixing_init
from trainers.config import ModelConfig
from trainers.model import SelfAttention, TransformerBlock

P, B, T, D, H = 2, 3, 11, 32, 4


def block(kind: str, causal: bool, **options) -> TransformerBlock:
    config = ModelConfig(d_model=D, n_heads=H, n_layers=2, attention={"kind": kind, **options})
    return TransformerBlock(config, members=P, causal=causal, layer=0)


@torch.no_grad()
def collaborative_from_softmax(softmax: TransformerBlock, collaborative: TransformerBlock) -> None:
    """W_q, W_k copied as the shared projections, c_h = W_k,h b_q,h, values, output projection,
    norms and MLP copied. W_k's bias is dropped: it shifts every score of a query equally."""
    qkv = softmax.attn.qkv
    w_q, w_k, w_v = qkv.weight.chunk(3, dim=-1)  # [P, D, D] each
    b_q, _, b_v = qkv.bias.chunk(3, dim=-1)
    attn = collaborative.attn
    attn.query_key.weight.copy_(torch.cat([w_q, w_k], dim=-1))
    # c_h[d] = sum_k W_k[d, h*K + k] b_q[h*K + k]: [P, D, H]
    attn.content_bias.weight.copy_((w_k * b_q[:, None, :]).view(P, D, H, D // H).sum(-1))
    attn.value.weight.copy_(w_v)
    attn.value.bias.copy_(b_v)
    attn.proj.load_state_dict(softmax.attn.proj.state_dict())
    for name in ("norm_attn", "norm_mlp", "mlp"):
        getattr(collaborative, name).load_state_dict(getattr(softmax, name).state_dict())


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_reproduces_a_softmax_block_at_full_key_dim(causal):
    torch.manual_seed(0)
    softmax = block("softmax", causal)
    with torch.no_grad():  # biases that matter: b_q moves scores, b_k must not
        for param in softmax.attn.qkv.parameters():
            param.normal_(std=0.3)
    collaborative = block("collaborative", causal, key_dim=D, mixing_init="concatenate")
    collaborative_from_softmax(softmax, collaborative)
    x_PBTD = torch.randn(P, B, T, D)
    torch.testing.assert_close(collaborative(x_PBTD), softmax(x_PBTD), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_padded_keys_are_ignored(causal):
    config = ModelConfig(d_model=D, n_heads=H, attention={"kind": "collaborative", "key_dim": 8})
    attention = CollaborativeAttention(config, members=P, causal=causal)
    x_PBTD = torch.randn(P, B, T, D)
    key_mask_PBT = torch.ones(P, B, T, dtype=torch.bool)
    key_mask_PBT[0, 1, 7:] = key_mask_PBT[1, 2, 4:] = False
    out = attention(x_PBTD, key_mask_PBT)
    changed = x_PBTD.clone()
    changed[0, 1, 7:] += 3.0
    changed[1, 2, 4:] -= 3.0
    again = attention(changed, key_mask_PBT)
    torch.testing.assert_close(again[key_mask_PBT], out[key_mask_PBT], rtol=0, atol=1e-6)


def test_mixing_init_patterns():
    concatenate = mixing_init("concatenate", 2, 3, 8)  # ceil(8 / 3) = 3 dims a head; the last gets 2
    assert concatenate[0].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]]
    assert torch.equal(mixing_init("all_ones", 2, 3, 8), torch.ones(2, 3, 8))
    uniform = mixing_init("uniform", 2, 3, 8)
    assert 0.05 < uniform.std() < 0.5 and not torch.equal(uniform[0], uniform[1])


def test_parameter_saving_at_quarter_key_dim():
    config = ModelConfig(d_model=256, n_heads=4, attention={"kind": "collaborative", "key_dim": 64})
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    standard = count(SelfAttention(ModelConfig(d_model=256, n_heads=4), members=1, causal=False, layer=0))
    collaborative = count(CollaborativeAttention(config, members=1, causal=False))
    # query/key side: 2 D^2 + 2 D (standard) against 2 D Q + H Q + H D
    assert standard - collaborative == (2 * 256 ** 2 + 2 * 256) - (2 * 256 * 64 + 4 * 64 + 4 * 256)
    assert (standard, collaborative) == (263168, 165632)  # 37% fewer; query/key side 131584 -> 34048


def test_key_dim_wider_than_the_model_is_refused():
    config = ModelConfig(d_model=D, n_heads=H, attention={"kind": "collaborative", "key_dim": 2 * D})
    with pytest.raises(ValueError, match="key_dim"):
        CollaborativeAttention(config, members=P, causal=False)
