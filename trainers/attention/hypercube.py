"""Hypercube block-sparse attention ("What Dense Graph Do You Need for Self-Attention?",
Wang et al., ICML 2022; reference: yxzwang/Normalized-Information-Payload,
`TesseractSparsityConfig`).

Legend: N = P*B folded batch, H heads, T tokens, K head dim, U blocks (U = ceil(T / b)),
b tokens per block, S key blocks per query block (itself and its neighbours), D hypercube
dimension ceil(log2 U).

The tokens are cut into U blocks of b. The reference numbers the blocks along a Gray code
of D bits and links two blocks when their codes differ in one bit; undoing the Gray code,
the neighbours of block i are i XOR (2^(d+1) - 1) for d = 0 .. D-1 (flip the low d+1 bits),
kept when they are < U. Block i attends, with exact softmax over the union, to its own
block and those neighbours: O(T * b * log(T / b)) work, and any block reaches any other in
D layers (the hypercube's diameter, also true of the truncated cube when U is not a power
of two). The key blocks are gathered by index, so no T x T tensor is ever built.

Choices the paper leaves open (or the reference refuses):
  - T not a multiple of b (the reference raises): q, k, v are padded with zeros to U * b
    tokens and the padded keys are masked out, so the last, partial block is an ordinary
    block with fewer real keys; the padded query rows are cut off again.
  - A neighbour code >= U: dropped (the reference points it at the block itself, which
    changes nothing under its 0/1 layout; here it would count the block twice, so it is
    masked out instead).
  - Causal form (the paper is bidirectional): block i keeps only the neighbours j < i,
    whole, and its own block under a token-level causal mask. Every j < i is still reached
    within D layers (j < i is a neighbour of i exactly when bit d of i is set, and the
    descending paths cover the prefix; tests/unit/trainers/test_attention_hypercube.py
    checks it for U = 1 .. 39 and around powers of two up to 300;
    it held for every U up to 300 when checked once).
  - Key padding mask: padded keys get zero weight. A query row whose every allowed key is
    padding (possible only for a padded query) gets an arbitrary finite output (uniform
    weights), which never reaches a real position.
  - Block size default 16, the reference's LRA and pretraining setting.
"""
import math

import torch
from torch import nn

from trainers.attention.chunked import split_chunks
from trainers.attention.config import HypercubeAttentionConfig


def neighbour_blocks(num_blocks: int, *, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Key blocks of every query block: (index_US, valid_US), slot 0 the block itself.

    A slot whose neighbour does not exist (code >= U, or j > i when causal) holds the block's
    own index with valid False, so gathering by index_US stays rectangular.
    """
    dims = math.ceil(math.log2(num_blocks)) if num_blocks > 1 else 0
    own_U1 = torch.arange(num_blocks).unsqueeze(1)
    low_bits_D = 2 ** torch.arange(1, dims + 1) - 1
    neighbour_UD = own_U1 ^ low_bits_D
    exists_UD = neighbour_UD < num_blocks
    if causal:
        exists_UD &= neighbour_UD < own_U1
    index_US = torch.cat([own_U1, torch.where(exists_UD, neighbour_UD, own_U1)], dim=1)
    valid_US = torch.cat([torch.ones_like(own_U1, dtype=torch.bool), exists_UD], dim=1)
    return index_US, valid_US


class HypercubeAttention(nn.Module):
    supports_causal = True

    def __init__(self, config: HypercubeAttentionConfig, *, members: int, head_dim: int, causal: bool,
                 layer: int = 0):
        super().__init__()
        self.block = config.block_size
        self.causal = causal
        # (num_blocks, device) -> allowed_keys: built on the host once, not copied every step
        # (a blocking copy to a GPU waits for its stream).
        self._allowed: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def allowed_keys(self, num_blocks: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(index_US, allowed_UbSb): which gathered key may each query token see, padding aside."""
        key = (num_blocks, torch.device(device))
        if key not in self._allowed:
            self._allowed[key] = self._build_allowed_keys(num_blocks, key[1])
        return self._allowed[key]

    def _build_allowed_keys(self, num_blocks: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        index_US, valid_US = neighbour_blocks(num_blocks, causal=self.causal)
        b, S = self.block, index_US.shape[1]
        allowed_UbSb = valid_US[:, None, :, None].expand(num_blocks, b, S, b).clone()
        if self.causal:  # own block (slot 0): token-level causal mask
            allowed_UbSb[:, :, 0, :] &= torch.ones(b, b, dtype=torch.bool).tril()
        return index_US.to(device), allowed_UbSb.to(device)

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor,
                key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
        N, H, T, K = q_NHTK.shape
        b = self.block
        if key_mask_NT is None:
            key_mask_NT = torch.ones(N, T, dtype=torch.bool, device=q_NHTK.device)
        # T zero-padded (False in the mask) up to U blocks of b tokens.
        real_NUb = split_chunks(key_mask_NT.unsqueeze(-1), b).squeeze(-1)
        q_NHUbK, k_NHUbK, v_NHUbK = (split_chunks(x, b) for x in (q_NHTK, k_NHTK, v_NHTK))
        U = real_NUb.shape[1]

        index_US, allowed_UbSb = self.allowed_keys(U, q_NHTK.device)
        S = index_US.shape[1]
        k_NHUJK = k_NHUbK[:, :, index_US].reshape(N, H, U, S * b, K)  # J = S*b gathered keys
        v_NHUJK = v_NHUbK[:, :, index_US].reshape(N, H, U, S * b, K)
        real_N1U1J = real_NUb[:, index_US].reshape(N, 1, U, 1, S * b)
        allowed_N1UbJ = allowed_UbSb.reshape(1, 1, U, b, S * b) & real_N1U1J

        logits_NHUbJ = (q_NHUbK * K ** -0.5) @ k_NHUJK.transpose(-2, -1)
        logits_NHUbJ = logits_NHUbJ.masked_fill(~allowed_N1UbJ, torch.finfo(logits_NHUbJ.dtype).min)
        out_NHUbK = torch.softmax(logits_NHUbJ, dim=-1) @ v_NHUJK
        return out_NHUbK.reshape(N, H, U * b, K)[:, :, :T]
