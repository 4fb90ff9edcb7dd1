"""The population-batched transformer: G = 1 group of P members in one nn.Module.

Legend for tensor names (shape suffixes):
  P members, B sequences per member, T tokens, D model width, H heads, K head dim,
  F feed-forward width, V vocabulary, C classes, N = P*B (members folded into batch).

Every weight has a leading member axis P (P = 1 is a plain model). Linear layers are
batched matmuls over P; attention folds P into the batch axis so fused kernels (SDPA,
chunked linear attention) run unchanged. The loss of the group is the SUM of member
losses, so each member's gradient is exactly what it would be alone.
"""
import torch
import torch.nn.functional as F
from torch import nn

from trainers.attention import BLOCKS, KERNELS, SUBLAYERS
from trainers.attention.grid import grid_kwargs
from trainers.attention.heads import heads_kwargs
from trainers.config import ModelConfig
from trainers.conv_stem import STEM_PATCH, ConvStem
from trainers.layers import (
    BatchedEmbedding,
    BatchedLayerNorm,
    BatchedLinear,
    MemberDropout,
    residual_init_std,
)
from trainers.patches import PatchEmbedding


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, *, members: int, causal: bool, layer: int,
                 grid: tuple[int, int] | None = None):
        super().__init__()
        self.n_heads = config.n_heads
        head_dim = config.d_model // config.n_heads
        self.qkv = BatchedLinear(members, config.d_model, 3 * config.d_model)
        # `layer` keys the random features of performer / lara, so layers draw different ones.
        kernel = KERNELS[config.attention.kind]
        self.kernel = kernel(config.attention, members=members, head_dim=head_dim, causal=causal, layer=layer,
                             **grid_kwargs(kernel, grid), **heads_kwargs(kernel, config.n_heads))
        self.proj = BatchedLinear(members, config.d_model, config.d_model,
                                  init_std=residual_init_std(config.n_layers))

    def forward(self, x_PBTD: torch.Tensor, key_mask_PBT: torch.Tensor | None = None) -> torch.Tensor:
        P, B, T, D = x_PBTD.shape
        H, K = self.n_heads, D // self.n_heads
        qkv_PBT3HK = self.qkv(x_PBTD).view(P, B, T, 3, H, K)
        # [P, B, T, 3, H, K] -> three [N, H, T, K] views with members folded into batch.
        q_NHTK, k_NHTK, v_NHTK = qkv_PBT3HK.reshape(P * B, T, 3, H, K).permute(2, 0, 3, 1, 4)
        key_mask_NT = None if key_mask_PBT is None else key_mask_PBT.reshape(P * B, T)
        out_NHTK = self.kernel(q_NHTK, k_NHTK, v_NHTK, key_mask_NT)
        out_PBTD = out_NHTK.transpose(1, 2).reshape(P, B, T, D)
        return self.proj(out_PBTD)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, *, members: int):
        super().__init__()
        self.up = BatchedLinear(members, config.d_model, config.ffn_width)
        self.down = BatchedLinear(members, config.ffn_width, config.d_model,
                                  init_std=residual_init_std(config.n_layers))

    def forward(self, x_PBTD: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x_PBTD)))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, *, members: int, causal: bool, layer: int,
                 grid: tuple[int, int] | None = None):
        super().__init__()
        self.norm_attn = BatchedLayerNorm(members, config.d_model)
        sublayer = SUBLAYERS.get(config.attention.kind)  # kinds that need x, not q/k/v
        if sublayer is None:
            self.attn = SelfAttention(config, members=members, causal=causal, layer=layer, grid=grid)
        else:
            self.attn = sublayer(config, members=members, causal=causal, layer=layer, **grid_kwargs(sublayer, grid))
        self.norm_mlp = BatchedLayerNorm(members, config.d_model)
        self.mlp = MLP(config, members=members)
        self.dropout = MemberDropout(members, config.dropout)

    def forward(self, x_PBTD: torch.Tensor, key_mask_PBT: torch.Tensor | None = None) -> torch.Tensor:
        x_PBTD = x_PBTD + self.dropout(self.attn(self.norm_attn(x_PBTD), key_mask_PBT))
        return x_PBTD + self.dropout(self.mlp(self.norm_mlp(x_PBTD)))


class PopulationTransformer(nn.Module):
    """Embedding, N blocks, final norm, then a head.

    `num_classes=None`: causal language model, logits [P, B, T, V] from a head tied to
    the token embedding. Otherwise: classifier over the mean (`config.pool: mean`) or the
    max (`max`) of the non-padding positions, logits [P, B, C].

    With a `pad_id` (tasks that pad, such as ListOps), every block gets a key mask
    computed from the ids, so padding is never attended to (see `key_mask`).

    `grid` (H, W): the task's tokens are an image read row by row (None for 1-D tasks);
    it is handed to the attention kinds that read it (trainers/attention/grid.py).
    `patch_size` p > 1: the ids are the pixels of a (H·p, W·p) image and each p × p patch
    becomes one token through a learned linear map (trainers/patches.py) instead of the
    lookup table; `grid` is then the grid of patches. With `config.image_stem: conv` the
    tokens come from a small CNN instead (trainers/conv_stem.py), which needs p = 4.
    """

    def __init__(self, config: ModelConfig, *, members: int, vocab_size: int, max_seq_len: int,
                 causal: bool, num_classes: int | None = None, pad_id: int | None = None,
                 grid: tuple[int, int] | None = None, patch_size: int = 1):
        super().__init__()
        self.members = members
        self.pad_id, self.pool = pad_id, config.pool
        if config.image_stem == "conv":  # tokens are CNN features; no vocabulary to tie a head to
            if grid is None or num_classes is None or patch_size != STEM_PATCH:
                raise ValueError(f"image_stem conv needs an image classifier with patch_size {STEM_PATCH} (its two "
                                 f"2x2 pools), got grid {grid}, num_classes {num_classes}, patch_size {patch_size}")
            self.tok_emb = ConvStem(members, grid=grid, d_model=config.d_model)
        elif patch_size == 1:
            self.tok_emb = BatchedEmbedding(members, vocab_size, config.d_model)
        elif grid is None or num_classes is None:
            raise ValueError(f"patch_size {patch_size} needs an image classifier (a grid and num_classes)")
        else:  # tokens are patches; there is no vocabulary to tie a language-model head to
            self.tok_emb = PatchEmbedding(members, grid=grid, patch_size=patch_size, d_model=config.d_model)
        # None with `positions: none`: the model then sees a set of tokens, unless they carry their place.
        self.pos_emb = (nn.Parameter(torch.randn(members, max_seq_len, config.d_model) * 0.02)  # [P, T, D]
                        if config.positions == "learned" else None)
        self.dropout = MemberDropout(members, config.dropout)
        kind = config.attention.kind
        if kind in BLOCKS:
            make_block = lambda i: BLOCKS[kind](config.attention, members=members, d_model=config.d_model,  # noqa: E731
                                                n_layers=config.n_layers, causal=causal, dropout=config.dropout,
                                                layer=i, **grid_kwargs(BLOCKS[kind], grid))
        else:
            make_block = lambda i: TransformerBlock(config, members=members, causal=causal, layer=i,  # noqa: E731
                                                    grid=grid)
        self.blocks = nn.ModuleList(make_block(i) for i in range(config.n_layers))
        self.norm_out = BatchedLayerNorm(members, config.d_model)
        # fan_in: torch.nn.Linear's spread (uniform +-1/sqrt(D) has std 1/sqrt(3D)); on Pathfinder the
        # small default's near-zero logits made leaving the 0.693 plateau a rare draw (README.md).
        classifier_std = (3 * config.d_model) ** -0.5 if config.classifier_init == "fan_in" else 0.02
        self.classifier = (BatchedLinear(members, config.d_model, num_classes, init_std=classifier_std)
                           if num_classes is not None else None)

    def forward(self, ids_PBT: torch.Tensor) -> torch.Tensor:
        key_mask_PBT = self.key_mask(ids_PBT)
        x_PBTD = self.tok_emb(ids_PBT)  # with patches, T is the number of patches, not of ids
        if self.pos_emb is not None:
            x_PBTD = x_PBTD + self.pos_emb[:, None, :x_PBTD.shape[2], :]
        x_PBTD = self.dropout(x_PBTD)
        for block in self.blocks:
            x_PBTD = block(x_PBTD, key_mask_PBT)
        x_PBTD = self.norm_out(x_PBTD)
        if self.classifier is None:
            P, B, T, D = x_PBTD.shape
            # Tied head: logits = x @ E^T per member, one bmm for the population.
            logits_PMV = torch.bmm(x_PBTD.reshape(P, B * T, D), self.tok_emb.weight.transpose(1, 2))
            return logits_PMV.view(P, B, T, -1)
        return self.classifier(self.pooled(x_PBTD, key_mask_PBT))

    def pooled(self, x_PBTD: torch.Tensor, key_mask_PBT: torch.Tensor | None) -> torch.Tensor:
        """[P, B, T, D] -> [P, B, D]: the mean or the max over the real tokens; padding
        never counts (in the max it is -inf, so it never wins)."""
        if self.pool == "max":
            if key_mask_PBT is not None:
                x_PBTD = x_PBTD.masked_fill(~key_mask_PBT.unsqueeze(-1), float("-inf"))
            return x_PBTD.amax(2)
        if key_mask_PBT is None:
            return x_PBTD.mean(2)
        keep_PBT1 = key_mask_PBT.unsqueeze(-1).to(x_PBTD.dtype)
        return (x_PBTD * keep_PBT1).sum(2) / keep_PBT1.sum(2)

    def key_mask(self, ids_PBT: torch.Tensor) -> torch.Tensor | None:
        """True at real tokens, False at padding; None when the task does not pad. A
        sequence of padding only counts as all real, so that every row has a real key
        (kernels may rely on it: an empty softmax row is NaN)."""
        if self.pad_id is None:
            return None
        real_PBT = ids_PBT != self.pad_id
        return real_PBT | ~real_PBT.any(-1, keepdim=True)

    def set_dropout(self, rate_P: torch.Tensor) -> None:
        """Give each member its own dropout rate (PBT mutates it)."""
        for module in self.modules():
            if isinstance(module, MemberDropout):
                module.set_rate_(rate_P)


def member_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per member: logits [P, B, T, V] / targets [P, B, T], or
    logits [P, B, C] / targets [P, B]. Returns loss_P."""
    P = logits.shape[0]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    return loss.view(P, -1).mean(dim=1)
