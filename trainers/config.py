"""Spec sections that trainers/ consumes: `task`, `model`, `train`.

Each is a frozen pydantic model that forbids unknown keys; launch/ parses the YAML once
and hands each component only the sections it uses.
"""
import os
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from compression.spec_types import Bool, Float, Int, PositiveFloat, PositiveInt
from trainers.attention.config import AttentionConfig
from trainers.npy_header import npy_header


def _absolute(path: Path) -> Path:
    # Ray Train's workers run in their own working directory, so a path relative to where
    # `launch run` started would not be found there: it is made absolute at validation.
    return Path(os.path.expanduser(path)).absolute()


DataPath = Annotated[Path, AfterValidator(_absolute)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSection(Section):
    """What every task section tells the rest of the spec without building any data."""

    @property
    def grid(self) -> tuple[int, int] | None:
        """(H, W) when the sequence is an image read row by row (grid attention kinds need
        one); None for 1-D tasks."""
        return None


class ImageTask(TaskSection):
    """A task on images read row by row: one token per pixel or patch of its grid."""

    @property
    def seq_len(self) -> int:
        height, width = self.grid or (0, 0)
        return height * width


class StdlibCodeTask(TaskSection):
    """Byte-level LM on the Python standard library's own source (no download)."""

    kind: Literal["stdlib_code"] = "stdlib_code"
    causal: ClassVar[bool] = True  # next-token prediction: attention must not look ahead
    seq_len: PositiveInt = Field(128, description="tokens per training sequence")
    val_fraction: Float = Field(0.05, gt=0, lt=1, description="share of files held out for validation")


class TokenFileTask(TaskSection):
    """LM on a user's pre-tokenized file: `.npy`, or raw `.bin` of `dtype` ids."""

    kind: Literal["token_file"] = "token_file"
    causal: ClassVar[bool] = True
    path: DataPath = Field(description="path of a .npy or raw .bin token file")
    dtype: Literal["uint16", "uint32"] = "uint16"
    vocab_size: PositiveInt = Field(description="ids must lie in [0, vocab_size)")
    seq_len: PositiveInt = 128
    val_fraction: Float = Field(0.05, gt=0, lt=1, description="tail of the file held out for validation")


class ListOpsTask(TaskSection):
    """Long Range Arena ListOps, generated locally from the seed (brackets kept): classify
    the value (0-9) of a nested MIN/MAX/MED/SM expression. Reported as accuracy."""

    kind: Literal["listops"] = "listops"
    causal: ClassVar[bool] = False  # classification: attention sees the whole expression
    seq_len: PositiveInt = Field(512, description="padded sequence length (>= max_len)")
    min_len: PositiveInt = Field(100, description="shortest expression in tokens (LRA: 500)")
    max_len: PositiveInt = Field(512, description="longest expression in tokens (LRA: 2000)")
    max_depth: PositiveInt = 10
    max_args: Int = Field(10, ge=2)
    num_train: PositiveInt = 5000
    num_val: PositiveInt = 500
    num_test: PositiveInt = 500

    @model_validator(mode="after")
    def _lengths(self):
        if not self.min_len <= self.max_len <= self.seq_len:
            raise ValueError(f"need min_len <= max_len <= seq_len, got {self.min_len}, {self.max_len}, "
                             f"{self.seq_len}")
        return self


PATCH_SIZE = ("1: one token per pixel (its grey level); p > 1: each p x p patch is one token through a learned "
              "linear map (ViT), a grid of (H/p, W/p) tokens; p must divide the image's height and width")


class PathfinderTask(ImageTask):
    """Long Range Arena Pathfinder, generated locally from the seed (trainers/tasks/pathfinder.py):
    are the two round markers the ends of one dashed curve? One token per pixel (256 grey
    levels) or per `patch_size` patch, read row by row; binary classification, reported as
    accuracy. Generated sets are cached under $XDG_CACHE_HOME/sparsepop (default
    ~/.cache/sparsepop)."""

    kind: Literal["pathfinder"] = "pathfinder"
    causal: ClassVar[bool] = False  # classification: attention sees the whole image
    size: Int = Field(32, ge=8, description="image side in pixels (LRA: 32; Path-X: 128)")
    difficulty: Literal["easy", "intermediate", "hard"] = Field(
        "hard", description="target curve length: 6, 9 or 14 paddles (LRA's Pathfinder: hard)")
    num_train: PositiveInt = Field(10_000, description="LRA: 160000 (80% of 200000)")
    num_val: PositiveInt = 1_000
    num_test: PositiveInt = 1_000
    patch_size: PositiveInt = Field(1, description=PATCH_SIZE)

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid: pixels, or patches (patch_size dividing size is a rule of
        launch/spec/rules.py)."""
        return (self.size // self.patch_size, self.size // self.patch_size)


class ImageFileTask(ImageTask):
    """Classification of a user's images: `path`, a .npy of uint8 `[N, H, W]` (grey) or
    `[N, H, W, C]` (channels are averaged to grey: one token per pixel keeps the grid and
    the sequence H·W long), and `labels_path`, a .npy of N integer classes 0..K-1 (two
    plain .npy files, so both load without pickle and the images memory-mapped). One token
    per pixel (256 grey levels), read row by row, or one per `patch_size` patch; the last
    `val_fraction` of the images is the validation split."""

    kind: Literal["image_file"] = "image_file"
    causal: ClassVar[bool] = False
    path: DataPath = Field(description="path of a .npy of uint8 images [N, H, W] or [N, H, W, C]")
    labels_path: DataPath = Field(description="path of a .npy of N integer labels")
    val_fraction: Float = Field(0.1, gt=0, lt=1, description="tail of the images held out for validation")
    patch_size: PositiveInt = Field(1, description=PATCH_SIZE)

    @property
    def grid(self) -> tuple[int, int] | None:
        """The token grid, (H, W) / patch_size, from the file's header; None while it is
        unreadable or of the wrong rank (a spec problem, reported by launch/spec/rules.py,
        as is a patch_size that does not divide H and W)."""
        try:
            shape, _ = npy_header(self.path)
        except (OSError, ValueError):
            return None
        return (shape[1] // self.patch_size, shape[2] // self.patch_size) if len(shape) in (3, 4) else None


TaskConfig = Annotated[Union[StdlibCodeTask, TokenFileTask, ListOpsTask, PathfinderTask, ImageFileTask],
                       Field(discriminator="kind")]


class ModelConfig(Section):
    d_model: PositiveInt = 128
    n_layers: PositiveInt = 2
    n_heads: PositiveInt = 4
    d_ff: PositiveInt | None = Field(None, description="feed-forward width; default 4 * d_model")
    dropout: Float = Field(0.0, ge=0, lt=1)
    attention: AttentionConfig = Field(default={"kind": "softmax"}, validate_default=True)
    image_stem: Literal["linear", "conv"] = Field(
        "linear", description="how image tasks make tokens: linear (each task.patch_size patch through a learned "
                              "linear map, or a pixel's grey level when patch_size is 1) or conv (a small CNN, "
                              "trainers/conv_stem.py: a token per 4x4 pixels seeing 16 px; needs task.patch_size: 4)")
    pool: Literal["mean", "max"] = Field(
        "mean", description="how a classifier summarises its tokens: mean or max over the real (not padded) tokens")
    positions: Literal["learned", "none"] = Field(
        "learned", description="learned (a learned position embedding, started at N(0, 0.02)) or none (no position "
                               "embedding: tokens that carry their place themselves, such as conv stem features)")
    classifier_init: Literal["small", "fan_in"] = Field(
        "small", description="the classifier's initial weights: small (N(0, 0.02), as every other linear map) or "
                             "fan_in (std 1/sqrt(3 * d_model), torch.nn.Linear's spread)")

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self

    @property
    def ffn_width(self) -> int:
        return self.d_ff or 4 * self.d_model


class TrainConfig(Section):
    steps: PositiveInt = 300
    micro_batch_size: PositiveInt = Field(8, description="sequences per worker per member per micro-step")
    grad_accum_steps: PositiveInt = 1
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: Float = Field(0.0, ge=0)
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.95), description="AdamW's decay rates of the gradient's mean and square, each in [0, 1) "
                                 "(as torch.optim.AdamW requires)")
    momentum: Float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    warmup_steps: Int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    min_lr_ratio: Float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: Float = Field(1.0, ge=0, description="global-norm clip; 0 disables")
    log_interval: PositiveInt = 10
    eval_interval: PositiveInt = 50
    eval_batches: PositiveInt = 8
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="forward pass under torch.autocast at bf16/fp16; weights, gradients, the "
                            "exchange and the optimizer stay fp32; fp16 scales each member's loss on its own")
    compile: Bool = Field(
        False, description="torch.compile the population model's forward (trainers/compiling.py): the first "
                           "steps pay the compilation; true or false")
