"""MRA-2: multi-resolution approximate self-attention (Zeng et al., ICML 2022; reference:
mlpen/mra-attention, `mra2_attention`). Bidirectional only. Pure PyTorch: the reference's
CUDA block kernels are replaced by gathers and scatter-adds with the same shapes.

Legend: N = P*B folded batch, H heads, T tokens, K head dim, U blocks (U = ceil(T / b)),
b tokens per block, Z refined blocks (Z = min(U * blocks_per_row, U^2)).

1. Low resolution: block means q^_r, k^_c, v^_c (over real tokens only) give U x U logits
   s_rc = q^_r . k^_c / sqrt(K).
2. Selection: as in the reference, the Z blocks with the highest row-normalised
   s_rc - max_c s_rc are picked over the WHOLE U x U matrix of each (sequence, head), so
   `blocks_per_row` is an average budget per block row, not a per-row count. With key
   padding the budget is per sequence, (blocks holding a real token) x blocks_per_row
   (the reference's is fixed by the padded length), so padding never changes which real
   blocks are exact. The optional
   priors add a large bonus (as the reference does) to the first n block rows and columns
   (`initial_prior_first_n_blocks`) and to the band |r - c| <= n // 2
   (`initial_prior_diagonal_n_blocks`), so those are taken first. Selection carries no
   gradient.
3. High resolution: each picked block (r, c) is computed exactly, exp(q_t . k_s / sqrt(K))
   for the b x b token pairs, and scatter-added into its query rows.
4. full (MRA-2): every block not picked contributes count_c * exp(s_rc) * v^_c to each
   query of block r (its keys approximated by their mean), with the same normaliser as the
   exact part, so each row is one softmax over exact and approximated blocks.
   sparse (MRA-2-s): blocks not picked get zero weight.
With every block picked (blocks_per_row >= U) both modes are exact softmax.

Numerics: fp32 inside, cast back. Each query row is shifted by m_t = max(its exact logits,
the largest low-resolution logit of its block row among the blocks not picked), so no
exponential exceeds 1 (the reference's log-correction, written as one shared shift).

Choices the reference leaves open or does differently:
  - T not a multiple of b (the reference asserts): q, k, v are padded to U * b and the
    padded keys masked, so a partial last block is a block with fewer real tokens (its
    mean is over those); the padded query rows are cut off again.
  - Key padding mask: padded keys get zero weight in the exact blocks, do not enter the
    block means, and a block with no real key gets no low-resolution weight and is never
    preferred by the selection. A query with no reachable real key (a padded query, or in
    sparse mode a row whose picks are all padding) outputs zeros instead of dividing by
    zero; the reference adds 1e-6 to every denominator instead, which would bias the exact
    case. Outputs at padded query positions are otherwise unspecified, but finite.
  - Block size default 32, blocks_per_row 8, mode full, no priors: the reference's
    RoBERTa-512 setting (its 4K setting uses 16 per row and priors 1 and 5).
"""
import torch
from torch import nn

from trainers.attention.chunked import split_chunks
from trainers.attention.config import MraAttentionConfig

PRIOR_BONUS = 5e3  # the reference's bonus on row-normalised logits: far above any real gap


def _flat_index(block_NHZ: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """Blocks [N, H, Z] as rows of the (N * H * U) axis, so whole blocks move as contiguous rows."""
    N, H, _ = block_NHZ.shape
    start_NH1 = torch.arange(N * H, device=block_NHZ.device).view(N, H, 1) * num_blocks
    return (start_NH1 + block_NHZ).flatten()


def gather_blocks(x_NHUY: torch.Tensor, block_NHZ: torch.Tensor) -> torch.Tensor:
    """x [N, H, U, *Y] at blocks [N, H, Z] along U -> [N, H, Z, *Y]."""
    N, H, U = x_NHUY.shape[:3]
    rows = x_NHUY.reshape(N * H * U, -1).index_select(0, _flat_index(block_NHZ, U))
    return rows.view(*block_NHZ.shape, *x_NHUY.shape[3:])


def scatter_add_blocks(x_NHZY: torch.Tensor, block_NHZ: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """Sum x [N, H, Z, *Y] into blocks [N, H, Z] along a new U axis -> [N, H, U, *Y]."""
    N, H, Z = block_NHZ.shape
    rows = x_NHZY.reshape(N * H * Z, -1)
    total = rows.new_zeros(N * H * num_blocks, rows.shape[1]).index_add_(0, _flat_index(block_NHZ, num_blocks), rows)
    return total.view(N, H, num_blocks, *x_NHZY.shape[3:])


class MraAttention(nn.Module):
    supports_causal = False

    def __init__(self, config: MraAttentionConfig, *, members: int, head_dim: int, causal: bool, layer: int = 0):
        super().__init__()
        if causal:
            raise ValueError("attention kind 'mra' has no causal form; for a causal model use "
                             "'hypercube', 'linear', 'performer', 'flash' or 'softmax'")
        self.config = config

    def select_blocks(self, low_NHUU: torch.Tensor, has_token_N1U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The blocks to compute exactly: (flat indices r * U + c [N, H, Z], within budget [N, 1, Z]).

        Z is the budget of an unpadded sequence; a padded one gets its own smaller budget
        (its real blocks x blocks_per_row), and the picks past it are marked out of budget,
        so appended padding changes nothing at real positions.
        """
        U = low_NHUU.shape[-1]
        real_pair_N1UU = has_token_N1U.unsqueeze(-1) & has_token_N1U.unsqueeze(-2)
        low_NHUU = low_NHUU.masked_fill(~real_pair_N1UU, float("-inf"))  # padding-only blocks last
        score_NHUU = low_NHUU - low_NHUU.amax(-1, keepdim=True).clamp_min(torch.finfo(low_NHUU.dtype).min)
        rows_U1 = torch.arange(U, device=low_NHUU.device).unsqueeze(1)
        cols_1U = rows_U1.view(1, U)
        first, diagonal = self.config.initial_prior_first_n_blocks, self.config.initial_prior_diagonal_n_blocks
        prior_UU = (rows_U1 < first) | (cols_1U < first)
        if diagonal > 0:
            prior_UU |= (rows_U1 - cols_1U).abs() <= diagonal // 2
        score_NHUU = score_NHUU + PRIOR_BONUS * prior_UU.to(score_NHUU)
        budget = min(U * self.config.blocks_per_row, U * U)
        picked_NHZ = score_NHUU.flatten(-2).topk(budget, dim=-1, sorted=True).indices
        real_blocks_N11 = has_token_N1U.sum(-1, keepdim=True)
        own_budget_N11 = torch.minimum(real_blocks_N11 * self.config.blocks_per_row, real_blocks_N11 ** 2)
        return picked_NHZ, torch.arange(budget, device=low_NHUU.device) < own_budget_N11

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor,
                key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
        N, H, T, K = q_NHTK.shape
        b = self.config.block_size
        if key_mask_NT is None:
            key_mask_NT = torch.ones(N, T, dtype=torch.bool, device=q_NHTK.device)
        # T zero-padded (False in the mask) up to U blocks of b tokens.
        real_N1Ub = split_chunks(key_mask_NT[:, None, :, None], b).squeeze(-1)
        q_NHUbK, k_NHUbK, v_NHUbK = (split_chunks(x.float(), b) for x in (q_NHTK, k_NHTK, v_NHTK))
        U = real_N1Ub.shape[2]
        q_NHUbK = q_NHUbK * K ** -0.5

        # 1. low resolution: means over the real tokens of each block
        keep_N1Ub1 = real_N1Ub.unsqueeze(-1).to(q_NHUbK)
        count_N1U = real_N1Ub.sum(-1).to(q_NHUbK)
        q_hat_NHUK, k_hat_NHUK, v_hat_NHUK = ((x * keep_N1Ub1).sum(-2) / count_N1U.clamp_min(1).unsqueeze(-1)
                                              for x in (q_NHUbK, k_NHUbK, v_NHUbK))
        has_token_N1U = count_N1U > 0
        has_key_N11U = has_token_N1U.unsqueeze(-2)
        low_NHUU = q_hat_NHUK @ k_hat_NHUK.transpose(-2, -1)

        # 2. which blocks to compute exactly
        with torch.no_grad():
            picked_NHZ, in_budget_N1Z = self.select_blocks(low_NHUU, has_token_N1U)
        rows_NHZ, cols_NHZ = picked_NHZ // U, picked_NHZ % U

        # 3. exact blocks
        exact_NHZbb = gather_blocks(q_NHUbK, rows_NHZ) @ gather_blocks(k_NHUbK, cols_NHZ).transpose(-2, -1)
        real_NHZ1b = gather_blocks(real_N1Ub.expand(N, H, U, b), cols_NHZ).unsqueeze(-2)
        real_NHZ1b = real_NHZ1b & in_budget_N1Z.unsqueeze(-1).unsqueeze(-1)
        exact_NHZbb = exact_NHZbb.masked_fill(~real_NHZ1b, float("-inf"))
        shift_NHUb = exact_NHZbb.new_full((N, H, U, b), float("-inf")).scatter_reduce(
            2, rows_NHZ.unsqueeze(-1).expand(N, H, -1, b), exact_NHZbb.amax(-1), "amax")

        if self.config.approx_mode == "full":
            picked_NHUU = torch.zeros(N, H, U * U, dtype=torch.bool, device=q_NHTK.device)
            picked_NHUU = picked_NHUU.scatter(2, picked_NHZ, in_budget_N1Z.expand_as(picked_NHZ)).view(N, H, U, U)
            approximated_NHUU = ~picked_NHUU & has_key_N11U
            low_NHUU = low_NHUU.masked_fill(~approximated_NHUU, float("-inf"))
            low_max_NHU1 = low_NHUU.amax(-1, keepdim=True).detach()  # a stabiliser: it cancels out
            shift_NHUb = torch.maximum(shift_NHUb, low_max_NHU1)
        shift_NHUb = shift_NHUb.nan_to_num(0.0, neginf=0.0).detach()  # a row with nothing to shift by

        weight_NHZbb = torch.exp(exact_NHZbb - gather_blocks(shift_NHUb, rows_NHZ).unsqueeze(-1))
        numerator_NHUbK = scatter_add_blocks(weight_NHZbb @ gather_blocks(v_NHUbK, cols_NHZ), rows_NHZ, U)
        denominator_NHUb = scatter_add_blocks(weight_NHZbb.sum(-1), rows_NHZ, U)

        # 4. the blocks not picked, from their means (full mode)
        if self.config.approx_mode == "full":
            safe_max_NHU1 = low_max_NHU1.nan_to_num(0.0, neginf=0.0)
            low_weight_NHUU = torch.exp(low_NHUU - safe_max_NHU1) * count_N1U.unsqueeze(-2)
            # <= 1 already where a block is approximated; elsewhere low_weight is 0 and the clamp avoids inf * 0
            correction_NHUb = torch.exp((safe_max_NHU1 - shift_NHUb).clamp_max(0.0))
            numerator_NHUbK = numerator_NHUbK + correction_NHUb.unsqueeze(-1) * (
                low_weight_NHUU @ v_hat_NHUK).unsqueeze(-2)
            denominator_NHUb = denominator_NHUb + correction_NHUb * low_weight_NHUU.sum(-1, keepdim=True)

        out_NHUbK = numerator_NHUbK / denominator_NHUb.masked_fill(denominator_NHUb == 0, 1.0).unsqueeze(-1)
        return out_NHUbK.reshape(N, H, U * b, K)[:, :, :T].to(v_NHTK.dtype)
