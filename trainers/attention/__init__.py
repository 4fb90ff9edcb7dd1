"""Attention kinds, by the name used in the spec (`model.attention.kind`).

Two registries:
  KERNELS: kinds that replace only the attention map inside a standard pre-norm block.
      A kernel is an nn.Module built as `cls(config, head_dim=K, causal=bool, layer=i)`
      whose forward maps q, k, v of shape [N, H, T, K] (N = members x batch folded
      together, so fused kernels run unchanged) to [N, H, T, K].
  BLOCKS: kinds that replace the whole block (attention and MLP), such as FLASH's
      gated attention unit. A block is built as
      `cls(config, members=P, d_model=D, n_layers=L, causal=bool, dropout=float, layer=i)`
      and maps x [P, B, T, D] to x [P, B, T, D] (residual included).

`layer` (default 0) is the block's index in the model: kinds with random features key
their private generators by it, so layers draw different features while every
data-parallel worker draws the same ones. Every class has `supports_causal`; building one
with causal=True where it is False raises (LARA and MRA have no causal form).

Block-sparse kinds (hypercube, mra) cut the tokens into blocks and pad T up to a multiple
of the block size internally, masking the padded keys; they hold no weights or buffers.

Kinds that hold random state (performer, lara) keep buffers shared by all members of the
group, with no leading member axis: `projection_MK` and `training_calls.count`.
"""
from trainers.attention.flash import FlashBlock
from trainers.attention.hypercube import HypercubeAttention
from trainers.attention.lara import LaraAttention
from trainers.attention.linear import LinearAttention
from trainers.attention.mra import MraAttention
from trainers.attention.performer import PerformerAttention
from trainers.attention.softmax import SoftmaxAttention

KERNELS = {
    "softmax": SoftmaxAttention,
    "linear": LinearAttention,
    "performer": PerformerAttention,
    "lara": LaraAttention,
    "hypercube": HypercubeAttention,
    "mra": MraAttention,
}
BLOCKS: dict[str, type] = {"flash": FlashBlock}
