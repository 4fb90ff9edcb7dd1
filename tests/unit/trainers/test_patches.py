"""Patch tokens (`task.patch_size`): the grid and sequence they give, the embedding against
the explicit per-patch linear map, the member axis of its weights, and bad values refused."""
import numpy as np
import pytest
import torch

from launch.spec.problems import SpecError
from launch.spec.schema import validate_tree
from trainers.config import ModelConfig
from trainers.model import PopulationTransformer
from trainers.patches import PatchEmbedding, patches
from trainers.tasks import build_task_data


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _image_task(tmp_path, images, labels, **options):
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    return {"kind": "image_file", "path": str(tmp_path / "images.npy"), "labels_path": str(tmp_path / "labels.npy"),
            **options}


def test_patches_cut_the_image_row_by_row():
    image = torch.arange(4 * 6).view(1, 1, 24)  # a 4x6 image, pixel value = its row-major index
    patches_PBTQ = patches(image, (2, 3), 2)
    assert patches_PBTQ.shape == (1, 1, 6, 4)
    pixels = image.view(4, 6)
    for t in range(6):
        y, x = divmod(t, 3)  # tokens read row by row over the 2x3 grid of patches
        assert patches_PBTQ[0, 0, t].tolist() == pixels[2 * y:2 * y + 2, 2 * x:2 * x + 2].reshape(-1).tolist()
    with pytest.raises(ValueError, match="24 pixels are not the 4x4 image"):
        patches(image, (2, 2), 2)


def test_patch_embedding_equals_the_explicit_per_patch_linear_map():
    torch.manual_seed(0)
    P, B, p, grid, D = 3, 2, 4, (2, 3), 5
    embed = PatchEmbedding(P, grid=grid, patch_size=p, d_model=D)
    with torch.no_grad():
        embed.proj.bias.normal_()
    ids_PBN = torch.randint(0, 256, (P, B, grid[0] * p * grid[1] * p))
    out_PBTD = embed(ids_PBN)
    assert out_PBTD.shape == (P, B, 6, D)
    images = ids_PBN.view(P, B, grid[0] * p, grid[1] * p).double()
    for m in range(P):  # member m's own weights only
        weight, bias = embed.proj.weight[m].double(), embed.proj.bias[m].double()
        for b in range(B):
            for y in range(grid[0]):
                for x in range(grid[1]):
                    patch = images[m, b, y * p:(y + 1) * p, x * p:(x + 1) * p].reshape(-1) / 255
                    torch.testing.assert_close(out_PBTD[m, b, y * grid[1] + x].double(), patch @ weight + bias,
                                               rtol=1e-5, atol=1e-5)


def test_patched_model_carries_the_member_axis_and_members_stay_independent():
    torch.manual_seed(0)
    config = ModelConfig(d_model=16, n_layers=1, n_heads=2, attention={"kind": "rpe_fft"})
    model = PopulationTransformer(config, members=2, vocab_size=256, max_seq_len=16, causal=False, num_classes=2,
                                  grid=(4, 4), patch_size=2)
    assert model.tok_emb.proj.weight.shape == (2, 4, 16)  # [P, p·p, D]: copied and exchanged per member
    assert all(param.shape[0] == 2 for param in model.parameters())
    ids = torch.randint(0, 256, (2, 3, 64))
    logits = model(ids)
    assert logits.shape == (2, 3, 2)
    with torch.no_grad():
        model.tok_emb.proj.weight[1].normal_()  # member 1's patch weights only
    changed = model(ids)
    assert torch.equal(changed[0], logits[0]) and not torch.allclose(changed[1], logits[1])
    with pytest.raises(ValueError, match="needs an image classifier"):
        PopulationTransformer(config, members=1, vocab_size=256, max_seq_len=16, causal=True, patch_size=2)


def test_image_file_patches_give_the_grid_of_patches(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 12), dtype=np.uint8)
    spec = validate_tree({"task": _image_task(tmp_path, images, np.arange(10) % 2, patch_size=4),
                          "distributed": {"num_workers": 1}})
    assert (spec.task.grid, spec.task.seq_len) == ((2, 3), 6)
    data = build_task_data(spec.task, seed=0)
    assert (data.grid, data.patch_size) == ((2, 3), 4)
    pixels, _ = data.train_batch(rank=0, world_size=1, member=0, step=0, batch_size=2)
    assert pixels.shape == (2, 96)  # the ids stay pixels; the model makes the patches


def test_pathfinder_patches():
    spec = validate_tree({"task": {"kind": "pathfinder", "size": 16, "difficulty": "easy", "num_train": 8,
                                   "num_val": 4, "num_test": 4, "patch_size": 4}})
    assert (spec.task.grid, spec.task.seq_len) == ((4, 4), 16)
    assert build_task_data(spec.task, seed=0).grid == (4, 4)


@pytest.mark.parametrize("value, expected", [
    (0, "task.patch_size: Input should be greater than 0"),
    (-4, "task.patch_size: Input should be greater than 0"),
    (2.5, "task.patch_size: .*fractional part"),
    (True, "task.patch_size: expected a number, got a boolean"),
    (3, r"task.patch_size: 3 does not divide the 8x12 images; .*use one of 1, 2, 4$"),
])
def test_bad_patch_sizes_are_refused_naming_the_key(tmp_path, value, expected):
    images = np.zeros((10, 8, 12), np.uint8)
    with pytest.raises(SpecError, match=expected):
        validate_tree({"task": _image_task(tmp_path, images, np.arange(10) % 2, patch_size=value),
                       "distributed": {"num_workers": 1}})


def test_pathfinder_patch_size_must_divide_the_size():
    with pytest.raises(SpecError, match="task.patch_size: 5 does not divide the 16x16 images"):
        validate_tree({"task": {"kind": "pathfinder", "size": 16, "patch_size": 5}})
