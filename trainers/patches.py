"""Patch tokens for image tasks (`task.patch_size` p > 1), as ViT makes them.

Legend for tensor names (shape suffixes):
  P members, B images per member, Y / X the token grid's rows / columns (the image's
  H / p and W / p), T = Y·X tokens, Q = p·p pixels of one patch, D model width.

The task's data stays one grey level per pixel, read row by row ([P, B, H·W] ids), so
batching, sharding and the loop are the same with or without patches; the model cuts
each image into p × p patches (row by row, each patch's pixels row by row) and maps a
patch's Q grey levels through a learned linear map to one D-wide token. The map is a
`BatchedLinear`, so its weights carry the member axis like every other weight: PBT copies
them with the member, the exchange compresses their gradient.
"""
import torch
from torch import nn

from trainers.layers import BatchedLinear


def patches(ids_PBN: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """[P, B, H·W] pixel ids of images read row by row -> [P, B, T, Q] patches on the
    (Y, X) token grid, T = Y·X read row by row, each patch's Q pixels row by row."""
    (Y, X), p = grid, patch_size
    P, B, N = ids_PBN.shape
    if N != Y * p * X * p:
        raise ValueError(f"{N} pixels are not the {Y * p}x{X * p} image of a {Y}x{X} grid of {p}x{p} patches")
    pixels_PBYpXp = ids_PBN.view(P, B, Y, p, X, p)
    return pixels_PBYpXp.permute(0, 1, 2, 4, 3, 5).reshape(P, B, Y * X, p * p)


def unit_grey(pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Grey levels 0..255 scaled to [0, 1] in `dtype`: a black pixel adds nothing, so the
    bright strokes of a mostly dark image are what tells tokens apart."""
    return pixels.to(dtype) / 255.0


class PatchEmbedding(nn.Module):
    """[P, B, H·W] grey levels (0..255) -> [P, B, T, D]: each patch's pixels, scaled to
    [0, 1] (`unit_grey`), times a per-member [Q, D] weight plus a [D] bias."""

    def __init__(self, members: int, *, grid: tuple[int, int], patch_size: int, d_model: int):
        super().__init__()
        self.grid, self.patch_size = grid, patch_size
        self.proj = BatchedLinear(members, patch_size * patch_size, d_model)

    def forward(self, ids_PBN: torch.Tensor) -> torch.Tensor:
        patches_PBTQ = patches(ids_PBN, self.grid, self.patch_size)
        return self.proj(unit_grey(patches_PBTQ, self.proj.weight.dtype))
