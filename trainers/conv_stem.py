"""A convolutional stem for image tasks (`model.image_stem: conv`): a small CNN turns the
pixels into tokens, each seeing about 16 px, before the transformer.

Legend for tensor names (shape suffixes):
  P members, B images per member, H / W image rows / columns, Y / X the token grid's rows /
  columns (H / 4, W / 4), T = Y·X tokens, C channels (members folded in: P·channels), D
  model width.

The stem is the convolutions of a small CNN: 3x3 conv (32 channels), ReLU, 3x3 conv (32),
ReLU, 2x2 max pool, 3x3 conv (64), ReLU, 3x3 conv (64), ReLU, 2x2 max pool: a receptive
field of 16 px, on a grid of (H/4, W/4) 64-channel features, each mapped linearly to one
D-wide token. The two pools fix the token grid at a quarter of the image's sides, so the
task's `patch_size` must be 4 (launch/spec/rules.py refuses anything else), which keeps
the grid that the model, the positions and the grid attention kinds see the task's own.

It is not in Long Range Arena: LRA feeds pixels to the transformer, and that is the
benchmark's point. It is here because on Pathfinder the transformers tried on this CPU sat
at chance for thousands of steps with pixel or patch tokens, while a CNN that takes a max
over positions learnt the picture in minutes: the label is a local pattern about 16 px wide
(docs/pathfinder.md, the third look). Given that CNN's convolutions as its stem and a max
over tokens (`model.pool: max`), a throwaway probe of this transformer learnt too (0.727
after 2000 steps; neither piece alone did). In a `launch run` it learns reliably only without
positions and with a classifier at torch's spread (`model.positions: none`,
`model.classifier_init: fan_in`; configs/pathfinder.yaml, README, "Pathfinder: what learns
in minutes on a CPU").

Every weight carries the member axis P (`BatchedConv2d`, `BatchedLinear`), so PBT copies
the stem with its member, the population optimizer updates it per member and the exchange
compresses its gradient. Members are folded into the channel axis, so each convolution is
one grouped call for the whole population.
"""
import torch
import torch.nn.functional as F
from torch import nn

from trainers.layers import BatchedConv2d, BatchedLinear
from trainers.patches import unit_grey

STEM_PATCH = 4  # pixels per token side: the stem's two 2x2 max pools
CHANNELS = (32, 32, 64, 64)  # the CNN that learnt Pathfinder's easy 32x32 picture (docs/pathfinder.md)


class ConvStem(nn.Module):
    """[P, B, H·W] grey levels (0..255, read row by row) -> [P, B, T, D] tokens on the
    (H/4, W/4) grid, read row by row."""

    def __init__(self, members: int, *, grid: tuple[int, int], d_model: int):
        super().__init__()
        self.members, self.grid = members, grid
        widths = (1,) + CHANNELS
        self.convs = nn.ModuleList(BatchedConv2d(members, c_in, c_out) for c_in, c_out in zip(widths, widths[1:]))
        # nn.Linear's spread (uniform ±1/√fan-in has std 1/√(3·fan-in)), as in the probe
        # that learnt; 0.02 would start the tokens ~4x smaller than learned positions.
        self.proj = BatchedLinear(members, CHANNELS[-1], d_model, init_std=(3 * CHANNELS[-1]) ** -0.5)

    def forward(self, ids_PBN: torch.Tensor) -> torch.Tensor:
        (Y, X), P = self.grid, self.members
        B = ids_PBN.shape[1]
        # Scaled to [0, 1] as the patch embedding does; members become the channel axis.
        x_BCHW = unit_grey(ids_PBN.view(P, B, Y * STEM_PATCH, X * STEM_PATCH).transpose(0, 1), self.proj.weight.dtype)
        for i, conv in enumerate(self.convs):
            x_BCHW = F.relu(conv(x_BCHW))
            if i % 2 == 1:  # after each pair of convolutions (a pool acts per channel, so per member)
                x_BCHW = F.max_pool2d(x_BCHW, 2)
        features_PBTC = x_BCHW.view(B, P, CHANNELS[-1], Y * X).permute(1, 0, 3, 2)
        return self.proj(features_PBTC)
