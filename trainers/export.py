"""One member of a population model as a plain single model, and back.

An export is a folder with two files:
  model.safetensors  the member's tensors, without the member axis (a [P, in, out] weight
                     becomes [in, out]); tensors the members share (random features, call
                     counters) are stored as they are. The metadata names the tensors that
                     had a member axis, so the loader can restore it.
  config.json        the model section of the spec, the task section, the shape facts of the
                     model (vocabulary, sequence length, causal, classes, padding id, the
                     task's grid (H, W) or null, the patch size) and
                     where the member came from (run, member id, step, validation loss).

`load_exported(folder)` returns an `ExportedModel`: an nn.Module that maps token ids [B, T]
to logits ([B, T, V] for a language model, [B, C] for a classifier) with PyTorch alone (no
Ray, no DeepSpeed), in eval mode.
"""
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from trainers.config import ModelConfig
from trainers.model import PopulationTransformer

FORMAT = "sparsepop-export/1"
WEIGHTS, CONFIG = "model.safetensors", "config.json"
SHAPE_KEYS = ("vocab_size", "max_seq_len", "causal", "num_classes", "pad_id", "grid", "patch_size")


def member_tensors(population_state: dict[str, torch.Tensor], member: int, members: int,
                   single_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Member `member`'s tensors of a population state dict, each without the member axis
    where it has one; and the names of those. `single_state` (a members=1 model's state
    dict) tells which tensors have the member axis: theirs is 1 where the population's is P."""
    tensors, with_axis = {}, []
    for name, tensor in population_state.items():
        single = single_state[name].shape
        if len(single) > 0 and single[0] == 1 and tensor.shape == (members, *single[1:]):
            tensors[name] = tensor[member].contiguous()
            with_axis.append(name)
        elif tensor.shape == single:
            tensors[name] = tensor.contiguous()
        else:
            raise ValueError(f"{name}: shape {tuple(tensor.shape)} fits neither one member {tuple(single)} nor "
                             f"{members} members")
    return tensors, with_axis


def build_single(config: dict) -> PopulationTransformer:
    """A members=1 model of an export's config.json."""
    shape = {key: config["shape"][key] for key in SHAPE_KEYS if key not in ("grid", "patch_size")}
    grid = config["shape"].get("grid")  # exports written before grids existed lack it (all were 1-D)
    return PopulationTransformer(ModelConfig.model_validate(config["model"]), members=1, **shape,
                                 grid=tuple(grid) if grid is not None else None,  # JSON holds it as a list
                                 patch_size=config["shape"].get("patch_size", 1))  # older exports: pixels


def save_member(out: Path, population_state: dict[str, torch.Tensor], *, member: int, members: int,
                config: dict) -> Path:
    """Write member `member` of a population state dict as an export; `config` holds
    "model", "task", "shape" (SHAPE_KEYS) and "source"."""
    out.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, **config}
    tensors, with_axis = member_tensors(population_state, member, members, build_single(config).state_dict())
    save_file(tensors, str(out / WEIGHTS), metadata={"format": FORMAT, "member_axis": json.dumps(with_axis)})
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out


class ExportedModel(nn.Module):
    """A single model: ids [B, T] -> logits, the member axis hidden inside."""

    def __init__(self, population: PopulationTransformer, config: dict):
        super().__init__()
        self.population, self.config = population, config

    @property
    def causal(self) -> bool:
        return bool(self.config["shape"]["causal"])

    @property
    def max_seq_len(self) -> int:
        return int(self.config["shape"]["max_seq_len"])

    def forward(self, ids_BT: torch.Tensor) -> torch.Tensor:
        return self.population(ids_BT.unsqueeze(0))[0]


def load_exported(folder: str | Path) -> ExportedModel:
    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{folder / CONFIG}: not a sparsepop export (format {config.get('format')!r})")
    with safe_open(str(folder / WEIGHTS), framework="pt") as weights:
        with_axis = set(json.loads(weights.metadata()["member_axis"]))
        tensors = {name: weights.get_tensor(name) for name in weights.keys()}  # noqa: SIM118 - not a dict
    model = build_single(config)
    model.load_state_dict({name: t.unsqueeze(0) if name in with_axis else t for name, t in tensors.items()})
    return ExportedModel(model, config).eval()
