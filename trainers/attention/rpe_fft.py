"""Linear attention with a learned relative-position mask, by FFT (Choromanski et al.,
ICML 2022, "From block-Toeplitz matrices to differential equations on graphs").

Legend: P members, B sequences per member, N = P*B, H heads, T tokens, K head dim,
M = feature dims of phi (M = K here), J = K + 1 value columns (the normaliser's ones
column), R = 2 * max_offset + 1 table entries (in the parameters' names; in forward's
`_RMx` tensors R is N*H (sequence, head) rows, as in toeplitz.py), x = the token axes (T,)
or (Y, X), L = FFT points of a circle (1-D: toeplitz.near_frames; 2-D: toeplitz.fft_length,
the smallest 5-smooth length >= 2 * side - 1, per axis).

The attention matrix of linear attention, phi(Q) phi(K)^T, is masked elementwise by a
Toeplitz matrix f(i - j):
  out_i = sum_j f(i-j) phi(q_i).phi(k_j) v_j / sum_j f(i-j) phi(q_i).phi(k_j)
        = phi(q_i)^T S_i / phi(q_i)^T z_i,  S_i = sum_j f(i-j) phi(k_j) v_j^T,  z_i = sum_j f(i-j) phi(k_j)
S and z are convolutions along T of the sequence phi(k_j) [v_j, 1]^T with f, so they cost
O(T log T) per feature pair with FFTs instead of O(T^2). phi(x) = elu(x) + 1, the `linear`
kind's feature map, so with f = 1 this kind IS linear attention.

Choices the paper leaves open:
- f = exp(table): a positive mask keeps the normaliser positive (a sum of positive terms).
  The table starts at zero (f = 1: plain linear attention at init).
- The table is [P, H, R]: one learned value per member, head and offset -max_offset ..
  max_offset (the paper's per-head masks; the head count comes with `heads=`,
  trainers/attention/heads.py). Offsets farther than max_offset are clamped to the value at
  +-max_offset, so any T runs (a learned constant far field) and the parameter count does
  not depend on the task's length. On 1-D masks the two parts are computed apart: the near
  field (|i - j| < max_offset) by FFT on one circle of T + max_offset - 1 points or in
  overlap-save frames (toeplitz.near_frames, frames.py), the far field, c+ = f(max_offset)
  at every i - j >= max_offset and c- = f(-max_offset) at every j - i >= max_offset, by
  chunked prefix sums (far_field.py), both in one hand-written forward and backward.
- Tables saved before they were per head ([P, 1, R], [P, 1, 2R_y+1, 2R_x+1]: one table
  shared by the heads) load into every head (`_load_from_state_dict`): the same function,
  whose heads then train apart. Only the weights migrate: an optimizer's or error
  feedback's state for the old shape does not, so a run with an old table is not resumed.
- Causal: f(r) = 0 for r < 0, so the mask is lower triangular (the negative half of the
  table is then unused and gets zero gradient).
- 2-D grids (the paper's block-Toeplitz case): on a task with a grid (Y, X) (tokens are an
  image read row by row, T = Y*X) the mask is f(dy, dx) of the offset on the grid, chosen
  automatically (`grid_mask: false` keeps f(i - j) along the row-major sequence). The table
  is [P, H, 2*R_y + 1, 2*R_x + 1] with R_y = min(max_offset, Y - 1) (likewise R_x): every
  offset of the grid its own value unless max_offset clamps, so its size follows the task's
  grid as the position embedding follows its length. S and z are then 2-D convolutions over
  the grid, by 2-D FFTs on the zero-padded (L_y, L_x) grid (toeplitz.py). Bidirectional only
  (an image has no order to be causal in).
- Memory and time: the FFTs need phi(k)_m v_j for every pair (m, j): M*J sequences per
  (sequence, head), over 4 K numbers per token at K = 64. toeplitz.masked_readout convolves
  them a few at a time, in passes whose buffers hold at most `pass_buffer_mb` (2 MB: a
  pass's buffers then stay in cache and below glibc's 32 MB mmap threshold, so they are
  neither page-faulted in afresh nor evicted between the transform and its use), and reads
  each pass out into the output at once. Nothing of that size is kept for backward, which
  recomputes the transforms (6 FFTs per sequence instead of 4): measured side by side with
  the version that kept them (2026-12-01, 1 thread, width 256, 4 heads, under load), this
  was 1.7-2.4x faster from 512 to 8K tokens (README), and its peak memory is a pass's
  buffers plus O(T K) per (sequence, head) instead of the kept transforms' O(T K^2).
  Its backward is written by hand: autograd through rfft / irfft zero-fills and copies
  full-size buffers at every step and would keep the transforms.
  Splitting off the far field (2026-12-01) shortened the circle from 2T - 1 points (every
  offset of T tokens) to T + max_offset - 1, or to frames whose length is set by the kernel
  width, so the time per doubling of T tends to 2: `bench_attention.py --kinds rpe_fft
  --modes causal --threads 1 --repeats 3 --max-seconds 20` (the layer, width 256, 4 heads,
  idle): 337 / 689 / 1288 / 2769 / 5386 / 13029 ms at 512 .. 16K tokens, 2.15, 1.95, 2.42
  per doubling from 2K (before: 2.66, 2.44, 2.43), peak 439 MB at 16K (before: 431); old
  and new alternating in one process (under load), 1.13x / 1.46x / 1.76x / 1.97x faster at
  2K .. 16K (README). The far field's prefix sums are a chunk scan that keeps nothing for backward (through
  autograd they kept 300 MB more at 16K); the FFT inputs are padded for frames a pass at a
  time (padded whole, 140 MB more at 16K).
- Key padding: a padded key's phi(k) is zeroed, so it adds nothing to S or z.
- FFT numerics: from phi on everything runs in `fft_dtype` (fp64 inputs stay fp64), the
  readout phi(q)^T S included: it costs a multiply per (m, j) pair either way, and a cast
  of S to fp32 first would be one more pass over it. An FFT convolution's rounding is
  relative to its whole circle, not to each output: row i's normaliser z_i gets an absolute
  error near eps * sum_j f(i-j)|a_j| taken over every j of the circle (T tokens, or one
  frame's for the near field in frames), so a row with a small z_i (causal row 0 holds one
  term against T) loses log10(T) digits. The far field's prefix sums round relative to the
  sum so far (a chunk's products, then the running state). In fp32 that is 1.5e-4 at
  causal row 0 for T = 1000 (measured), so the convolutions run in float64 by default
  (`fft_dtype`), at about twice their time and memory.
"""
import torch
import torch.nn.functional as F
from torch import nn

from trainers.attention.config import RpeFftAttentionConfig
from trainers.attention.grid import grid_shape
from trainers.attention.frames import Frames
from trainers.attention.toeplitz import fft_length, masked_readout, near_frames

FAR_CHUNK = 64  # the far field's chunk of tokens (far_field.py), as the `linear` kind's default


class RpeFftAttention(nn.Module):
    supports_causal = True
    uses_grid = True  # 2-D mask on a task with a grid; 1-D tasks need none
    uses_heads = True  # a table per head

    def __init__(self, config: RpeFftAttentionConfig, *, members: int, heads: int, head_dim: int, causal: bool,
                 layer: int = 0, grid: tuple[int, int] | None = None):
        super().__init__()
        self.causal = causal
        self.max_offset = config.max_offset
        self.pass_bytes = int(config.pass_buffer_mb * 2 ** 20)
        self.fft_dtype = getattr(torch, config.fft_dtype)
        self.grid = grid if config.grid_mask else None
        if self.grid is None:
            self.log_mask_PHR = nn.Parameter(torch.zeros(members, heads, 2 * config.max_offset + 1))
            return
        if causal:
            raise ValueError("rpe_fft's 2-D grid mask is bidirectional; set grid_mask: false for a causal model")
        self.offsets_yx = tuple(min(config.max_offset, side - 1) for side in self.grid)
        self.log_mask_PHYX = nn.Parameter(torch.zeros(members, heads, *(2 * r + 1 for r in self.offsets_yx)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A table saved shared by the heads ([P, 1, ...]) becomes every head's (module docstring).
        for name, param in self.named_parameters(recurse=False):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.dim() == param.dim() and saved.shape[1] == 1 != param.shape[1]:
                state_dict[prefix + name] = saved.expand(-1, param.shape[1], *saved.shape[2:])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor,
                key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
        # Everything from phi on runs in the FFT dtype (fp64 by default; fp64 inputs stay fp64).
        dtype = torch.promote_types(torch.promote_types(v_NHTK.dtype, torch.float32), self.fft_dtype)
        T, K = v_NHTK.shape[-2:]
        tokens = (T,) if self.grid is None else grid_shape(self.grid, T, "rpe_fft")  # (Y, X) for the 2-D FFT
        # Rows R = N*H, token axes last ([R, M, x]): the FFTs run along contiguous memory.
        phi_q_RMx = (F.elu(q_NHTK.to(dtype)) + 1.0).transpose(-2, -1).flatten(0, 1).contiguous().unflatten(-1, tokens)
        phi_k_NHMT = (F.elu(k_NHTK.to(dtype)) + 1.0).transpose(-2, -1)
        if key_mask_NT is not None:
            phi_k_NHMT = phi_k_NHMT * key_mask_NT[:, None, None, :].to(dtype)
        phi_k_RMx = phi_k_NHMT.flatten(0, 1).contiguous().unflatten(-1, tokens)
        # A ones column on v makes the normaliser z ride along as output column K.
        v_RJT = F.pad(v_NHTK.to(dtype), (0, 1), value=1.0).transpose(-2, -1).flatten(0, 1).contiguous()
        if self.grid is None:
            frames = near_frames(T, self.max_offset, self.causal)
            c_NH2 = self.far_constants().to(dtype).repeat_interleave(v_NHTK.shape[0] // self.log_mask_PHR.shape[0], 0)
            y_RJT = masked_readout(self.near_mask(frames).to(dtype), phi_q_RMx, phi_k_RMx, v_RJT,
                                   pass_bytes=self.pass_bytes, frames=frames, far_R2=c_NH2.flatten(0, 1),
                                   max_offset=self.max_offset, causal=self.causal, chunk_size=FAR_CHUNK)
        else:
            y_RJT = masked_readout(self.relative_mask_2d().to(dtype), phi_q_RMx, phi_k_RMx, v_RJT.unflatten(-1, tokens),
                                   pass_bytes=self.pass_bytes).flatten(2)
        out_RKT = y_RJT[:, :K] / y_RJT[:, K:].clamp_min(1e-6)
        return out_RKT.transpose(-2, -1).unflatten(0, v_NHTK.shape[:2]).to(v_NHTK.dtype)

    def near_mask(self, frames: Frames) -> torch.Tensor:
        """f at the near offsets |r| < max_offset (r >= 0 when causal) on the circle of the near
        field's FFTs (toeplitz.near_frames), 0 at the circle's other points. [P, H, L]."""
        offset, used = frames.circle_offsets(self.log_mask_PHR.device)
        f_PHL = self.log_mask_PHR[..., offset.clamp(-self.max_offset, self.max_offset) + self.max_offset].exp()
        return f_PHL.masked_fill(~used, 0.0)

    def far_constants(self) -> torch.Tensor:
        """(c+, c-) = (f(max_offset), f(-max_offset)): f at every farther offset. [P, H, 2]."""
        return self.log_mask_PHR[..., [-1, 0]].exp()

    def relative_mask_2d(self) -> torch.Tensor:
        """f on the (L_y, L_x) FFT grid, each axis on fft_length's circle (circle_offsets). [P, H, L_y, L_x]."""
        axes = []
        for side, max_offset in zip(self.grid, self.offsets_yx):
            offset = circle_offsets(side, self.log_mask_PHYX.device)
            axes.append((offset.clamp(-max_offset, max_offset) + max_offset, offset <= -side))
        (rows, unused_rows), (cols, unused_cols) = axes
        f_PHYX = self.log_mask_PHYX[:, :, rows[:, None], cols[None, :]].exp()
        return f_PHYX.masked_fill(unused_rows[:, None] | unused_cols[None, :], 0.0)


def circle_offsets(length: int, device: torch.device) -> torch.Tensor:
    """The offset each of the fft_length(length) FFT points stands for: n for n < length,
    n - L beyond (the negative offsets, wrapped around the circle)."""
    n = torch.arange(fft_length(length), device=device)
    return torch.where(n < length, n, n - len(n))
