"""FLASH: the mixed-chunk GAU block equals its own quadratic form (a T x T attention
matrix written out here), with one chunk covering the sequence and with several chunks
and padding."""
import pytest
import torch
import torch.nn.functional as F

from trainers.attention.config import FlashAttentionConfig
from trainers.attention.flash import FlashBlock

P, B, D = 2, 3, 16


def quadratic_gau(block: FlashBlock, x_PBTD: torch.Tensor) -> torch.Tensor:
    """The block with attention as one T x T matrix A: within a chunk relu(q.k / L)^2
    (causal: j <= i); across chunks lin_q.lin_k scaled by 1/L over earlier chunks (causal)
    or by 1/T over every token (bidirectional)."""
    T, L = x_PBTD.shape[2], block.group_size
    u, v, z = F.silu(block.hidden(block.norm(x_PBTD))).split(block.widths, dim=-1)
    scale, offset = block.qk_scale[:, None, None], block.qk_offset[:, None, None]  # [P, 1, 1, 4, S]
    quad_q, quad_k, lin_q, lin_k = (z.unsqueeze(-2) * scale + offset).unbind(-2)
    chunk_T = torch.arange(T) // L
    same_chunk_TT = chunk_T[:, None] == chunk_T[None, :]
    a_PBTT = F.relu(quad_q @ quad_k.transpose(-2, -1) / L) ** 2 * same_chunk_TT
    lin_PBTT = lin_q @ lin_k.transpose(-2, -1)
    if block.causal:
        a_PBTT = a_PBTT.tril() + lin_PBTT * (chunk_T[:, None] > chunk_T[None, :]) / L
    else:
        a_PBTT = a_PBTT + lin_PBTT / T
    return x_PBTD + block.out(u * (a_PBTT @ v))


def make_block(group_size: int, causal: bool) -> FlashBlock:
    torch.manual_seed(0)
    block = FlashBlock(FlashAttentionConfig(group_size=group_size, qk_dim=8), members=P, d_model=D, n_layers=2,
                       causal=causal, dropout=0.0)
    with torch.no_grad():  # move away from the init (scale 1, offset 0) so each of the 4 views differs
        block.qk_scale.add_(0.3 * torch.randn_like(block.qk_scale))
        block.qk_offset.add_(0.3 * torch.randn_like(block.qk_offset))
        block.out.weight.normal_(std=0.3)
    return block


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("length, group_size", [(16, 16), (11, 16), (24, 8), (21, 8), (5, 1)],
                         ids=["one-chunk", "one-padded-chunk", "chunks", "padded-chunks", "chunk-of-one"])
def test_equals_quadratic_gau(causal, length, group_size):
    block = make_block(group_size, causal)
    x_PBTD = torch.randn(P, B, length, D, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(block(x_PBTD), quadratic_gau(block, x_PBTD), rtol=1e-5, atol=1e-5)


def test_one_chunk_causal_is_plain_relu_squared_gau():
    """With a single chunk the causal linear part is empty: the classic GAU of the paper."""
    block = make_block(group_size=16, causal=True)
    x_PBTD = torch.randn(P, B, 16, D, generator=torch.Generator().manual_seed(2))
    u, v, z = F.silu(block.hidden(block.norm(x_PBTD))).split(block.widths, dim=-1)
    q = z * block.qk_scale[:, None, None, 0] + block.qk_offset[:, None, None, 0]
    k = z * block.qk_scale[:, None, None, 1] + block.qk_offset[:, None, None, 1]
    a_PBTT = (F.relu(q @ k.transpose(-2, -1) / 16) ** 2).tril()
    torch.testing.assert_close(block(x_PBTD), x_PBTD + block.out(u * (a_PBTT @ v)), rtol=1e-5, atol=1e-5)
