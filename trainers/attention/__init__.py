"""Attention kinds, by the name used in the spec (`model.attention.kind`).

Three registries:
  KERNELS: kinds that replace only the attention map inside a standard pre-norm block.
      A kernel is an nn.Module built as
      `cls(config, members=P, head_dim=K, causal=bool, layer=i)` (plus `heads=H` for kernels
      with per-head weights: trainers/attention/heads.py)
      and called as `forward(q_NHTK, k_NHTK, v_NHTK, key_mask_NT=None) -> out_NHTK`:
      q, k, v of shape [N, H, T, K], N = members x batch folded together (member-major,
      so `q.view(P, B, H, T, K)` recovers the members and fused kernels run unchanged).
      Learned kernel parameters (rpe_fft's relative-position tables, [P, H, ...]) have a
      leading member axis P.
  SUBLAYERS: kinds that replace the standard block's whole attention sublayer (q/k/v and
      output projections included) because they act on x, not on q, k, v, such as
      collaborative attention's shared projections, or contextpool's pooling of x before
      q/k/v; norms, MLP and residuals stay. Built
      as `cls(model_config, members=P, causal=bool, layer=i)`; forward maps x [P, B, T, D]
      (and key_mask_PBT) to the sublayer's output [P, B, T, D], before the residual.
  BLOCKS: kinds that replace the whole block (attention and MLP), such as FLASH's
      gated attention unit. A block is built as
      `cls(config, members=P, d_model=D, n_layers=L, causal=bool, dropout=float, layer=i)`
      and called as `forward(x_PBTD, key_mask_PBT=None) -> x_PBTD` (residual included).

Padding: `key_mask_NT` / `key_mask_PBT` is a bool tensor, True at real tokens and False
at padding; None when nothing is padded (then every kind keeps its unmasked fast path).
A padded key gets zero weight and adds nothing to any normalizer, so outputs at real
positions are those of the unpadded sequence; outputs at padded positions are
unspecified but finite. The model (trainers/model.py) computes the mask from the ids when
the task has a pad_id, and guarantees every sequence at least one real token.

Weights: learned parameters of a kernel or block carry a leading member axis P
(nn.Parameter of shape [P, ...]), like every other weight of the model, so each member
trains its own, PBT exploits copy them, and the population optimizer and the gradient
exchange treat them per member (rpe_fft's table, collaborative's projections and mixing).

`layer` (default 0) is the block's index in the model: kinds with random features key
their private generators by it (trainers/attention/seeding.py, never the global RNG), so
layers draw different features while every data-parallel worker draws the same ones.
Grids: kinds that read the task's grid (H, W) (image tokens read row by row) set
`uses_grid = True` and take a `grid=` keyword ((H, W) or None) in their constructor; kinds
that cannot run without one also set `requires_grid = True` (ripple; the spec's rules refuse
them on 1-D tasks). Read the attributes through trainers/attention/grid.py, whose default is
False, so kinds without them need no change.

Every class has `supports_causal`; building one with causal=True where it is False
raises (LARA and MRA have no causal form).

Block-sparse kinds (hypercube, mra) cut the tokens into blocks and pad T up to a multiple
of the block size internally, masking the padded keys; they hold no weights or buffers.

Kinds that hold random state (performer, lara, vars) keep buffers shared by all members of
the group, with no leading member axis: `projection_MK` and `training_calls.count`.
"""
from trainers.attention.collaborative import CollaborativeAttention
from trainers.attention.contextpool import ContextPoolAttention
from trainers.attention.flash import FlashBlock
from trainers.attention.hypercube import HypercubeAttention
from trainers.attention.lara import LaraAttention
from trainers.attention.linear import LinearAttention
from trainers.attention.mra import MraAttention
from trainers.attention.performer import PerformerAttention
from trainers.attention.ripple import RippleAttention
from trainers.attention.rpe_fft import RpeFftAttention
from trainers.attention.softmax import SoftmaxAttention
from trainers.attention.vars import VarsAttention

KERNELS = {
    "softmax": SoftmaxAttention,
    "linear": LinearAttention,
    "performer": PerformerAttention,
    "lara": LaraAttention,
    "vars": VarsAttention,
    "hypercube": HypercubeAttention,
    "mra": MraAttention,
    "rpe_fft": RpeFftAttention,
    "ripple": RippleAttention,
}
SUBLAYERS: dict[str, type] = {"collaborative": CollaborativeAttention, "contextpool": ContextPoolAttention}
BLOCKS: dict[str, type] = {"flash": FlashBlock}
ALL_KINDS: dict[str, type] = {**KERNELS, **SUBLAYERS, **BLOCKS}
