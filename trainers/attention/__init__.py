"""Attention kinds, by the name used in the spec (`model.attention.kind`).

Three registries:
  KERNELS: kinds that replace only the attention map inside a standard pre-norm block.
      A kernel is an nn.Module built as `cls(config, members=P, head_dim=K, causal=bool,
      layer=i)` whose forward maps q, k, v of shape [N, H, T, K] (N = members x batch
      folded together, so fused kernels run unchanged) to [N, H, T, K]; learned kernel
      parameters (rpe_fft's relative-position table) have a leading member axis P.
  SUBLAYERS: kinds that replace the standard block's whole attention sublayer (q/k/v and
      output projections included) because they act on x, not on q, k, v, such as
      collaborative attention's shared projections; norms, MLP and residuals stay. Built
      as `cls(model_config, members=P, causal=bool, layer=i)`; forward maps x [P, B, T, D]
      (and key_mask_PBT) to the sublayer's output [P, B, T, D], before the residual.
  BLOCKS: kinds that replace the whole block (attention and MLP), such as FLASH's
      gated attention unit. A block is built as
      `cls(config, members=P, d_model=D, n_layers=L, causal=bool, dropout=float, layer=i)`
      and maps x [P, B, T, D] to x [P, B, T, D] (residual included).

`layer` (default 0) is the block's index in the model: kinds with random features key
their private generators by it, so layers draw different features while every
data-parallel worker draws the same ones. Every class has `supports_causal`; building one
with causal=True where it is False raises (LARA has no causal form).

Kinds that hold random state (performer, lara) keep buffers shared by all members of the
group, with no leading member axis: `projection_MK` and `training_calls.count`.
"""
from trainers.attention.collaborative import CollaborativeAttention
from trainers.attention.flash import FlashBlock
from trainers.attention.lara import LaraAttention
from trainers.attention.linear import LinearAttention
from trainers.attention.performer import PerformerAttention
from trainers.attention.rpe_fft import RpeFftAttention
from trainers.attention.softmax import SoftmaxAttention

KERNELS = {
    "softmax": SoftmaxAttention,
    "linear": LinearAttention,
    "performer": PerformerAttention,
    "lara": LaraAttention,
    "rpe_fft": RpeFftAttention,
}
SUBLAYERS: dict[str, type] = {"collaborative": CollaborativeAttention}
BLOCKS: dict[str, type] = {"flash": FlashBlock}
ALL_KINDS: dict[str, type] = {**KERNELS, **SUBLAYERS, **BLOCKS}
