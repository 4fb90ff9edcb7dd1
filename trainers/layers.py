"""Population-batched layers: every weight has a leading member axis P.

Legend for tensor names (shape suffixes):
  P members in the group, B sequences per member, T tokens, D model width,
  I / O input / output features, N = P*B folded batch.

A linear layer for the whole population is one batched matmul (`baddbmm`) over the
member axis; P = 1 is a plain layer. torch.func.vmap was measured to fall back to a
per-sample loop for SDPA on CPU, so the population is written into the layers instead.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class BatchedLinear(nn.Module):
    """y[p] = x[p] @ weight[p] + bias[p] for every member p, in one kernel."""

    def __init__(self, members: int, d_in: int, d_out: int, *, bias: bool = True, init_std: float = 0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(members, d_in, d_out) * init_std)  # [P, I, O]
        self.bias = nn.Parameter(torch.zeros(members, d_out)) if bias else None  # [P, O]

    def forward(self, x_PxI: torch.Tensor) -> torch.Tensor:
        members, d_in = x_PxI.shape[0], x_PxI.shape[-1]
        x_PMI = x_PxI.reshape(members, -1, d_in)  # M = all positions of a member
        if self.bias is None:
            y_PMO = torch.bmm(x_PMI, self.weight)
        else:
            y_PMO = torch.baddbmm(self.bias.unsqueeze(1), x_PMI, self.weight)
        return y_PMO.reshape(*x_PxI.shape[:-1], y_PMO.shape[-1])


class BatchedLayerNorm(nn.Module):
    """LayerNorm over the last axis with a scale and shift per member."""

    def __init__(self, members: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, dim))  # [P, D]
        self.bias = nn.Parameter(torch.zeros(members, dim))  # [P, D]
        self.eps = eps

    def forward(self, x_PxD: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x_PxD, x_PxD.shape[-1:], eps=self.eps)
        view = (x_PxD.shape[0],) + (1,) * (x_PxD.dim() - 2) + (x_PxD.shape[-1],)
        return y * self.weight.view(view) + self.bias.view(view)


class BatchedEmbedding(nn.Module):
    """A lookup table per member, stored as one [P, V, D] tensor.

    Member p's ids are offset by p*V into the flattened [P*V, D] table, so the whole
    population is one F.embedding call.
    """

    def __init__(self, members: int, num: int, dim: int, init_std: float = 0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(members, num, dim) * init_std)  # [P, V, D]

    def forward(self, ids_PBT: torch.Tensor) -> torch.Tensor:
        members, num, dim = self.weight.shape
        offset_P11 = (torch.arange(members, device=ids_PBT.device) * num).view(members, 1, 1)
        return F.embedding(ids_PBT + offset_P11, self.weight.view(members * num, dim))


class BatchedConv2d(nn.Module):
    """A k x k convolution per member ('same' padding, stride 1), weight [P, O, I, k, k] and
    bias [P, O], on images whose members' channels sit side by side: [B, P·I, H, W] ->
    [B, P·O, H, W]. Member p reads input channels p·I..(p+1)·I - 1 only, so the population
    is one grouped convolution (groups = P) instead of P calls. Initialised as
    torch.nn.Conv2d (uniform ±1/√fan-in, weight and bias)."""

    def __init__(self, members: int, c_in: int, c_out: int, *, kernel_size: int = 3):
        super().__init__()
        bound = (c_in * kernel_size * kernel_size) ** -0.5
        self.weight = nn.Parameter(  # [P, O, I, k, k]
            torch.empty(members, c_out, c_in, kernel_size, kernel_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, c_out).uniform_(-bound, bound))  # [P, O]

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        members, c_out, c_in, k, _ = self.weight.shape
        # Member-major: output channels p·O..(p+1)·O - 1 form group p, which reads input group p.
        return F.conv2d(x_BCHW, self.weight.reshape(members * c_out, c_in, k, k), self.bias.reshape(-1),
                        padding=k // 2, groups=members)


class MemberDropout(nn.Module):
    """Dropout with a rate per member (a [P] buffer), so PBT can mutate it per member.

    One mask is drawn for the whole [P, ...] tensor, so members get independent masks.
    """

    def __init__(self, members: int, rate: float):
        super().__init__()
        self.register_buffer("rate_P", torch.full((members,), float(rate)))
        # Whether any rate is above 0, known on the host: reading the buffer in forward
        # would make the host wait for a GPU in every layer of every step.
        self.active = rate > 0

    def set_rate_(self, rate_P: torch.Tensor) -> None:
        """Each member's rate ([P], on the host or the buffer's device)."""
        self.rate_P.copy_(rate_P)
        self.active = bool((torch.as_tensor(rate_P) > 0).any())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.active = bool((self.rate_P > 0).any())  # once, at load

    def forward(self, x_Px: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.active:
            return x_Px
        view = (x_Px.shape[0],) + (1,) * (x_Px.dim() - 1)
        keep_P = (1.0 - self.rate_P).to(x_Px.dtype).view(view)
        mask = torch.rand_like(x_Px) < keep_P
        return x_Px * mask / keep_P


def residual_init_std(n_layers: int) -> float:
    """GPT-2's scaled init for projections that write into the residual stream."""
    return 0.02 / math.sqrt(2 * n_layers)
