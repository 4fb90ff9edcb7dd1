"""The image_file example (`make image-example`, configs/image_file_example.yaml) with its 4x4
patch tokens trains end to end: a 2-worker mpiexec job of 2 members under PBT with top-k
compression, so the token embedding's per-member weights (the linear patch map, or the conv
stem with a max over tokens) are exchanged compressed and copied by an exploit; the exported
member is rebuilt from its config.json (which must carry the patch size and the stem) and
classifies pixel images."""
import pytest
import torch

from launch.image_example import write_example
from launch.runs.export import export_member
from tests.integration.conftest import train_two_members_under_pbt
from trainers.export import load_exported

PBT = ("population={size: 2, pbt: {perturbation_interval: 3, quantile_fraction: 0.5, "
       "hyperparam_mutations: {lr: {loguniform: [1.0e-3, 1.0e-2]}}}}")


@pytest.mark.parametrize("stem, pool", [("linear", "mean"), ("conv", "max")])
def test_image_file_example_with_patches_trains_under_pbt_and_compression(tmp_path, stem, pool):
    images, labels = write_example(tmp_path / "data")
    run_dir = train_two_members_under_pbt(
        "configs/image_file_example.yaml", tmp_path, f"task.path={images}", f"task.labels_path={labels}", PBT,
        "compression={method: topk, density: 0.1}",
        f"model={{d_model: 32, n_layers: 1, n_heads: 2, image_stem: {stem}, pool: {pool}}}",
        "train.steps=6", "train.micro_batch_size=4", "train.warmup_steps=1", "train.log_interval=3",
        "train.eval_interval=3", "train.eval_batches=1", "run.checkpoint_interval=6")

    exported = load_exported(export_member(run_dir, "best"))
    assert (exported.config["shape"]["grid"], exported.config["shape"]["patch_size"]) == ([8, 8], 4)
    # [member, 4·4 pixels or the stem's 64 channels, d_model]
    assert exported.population.tok_emb.proj.weight.shape == (1, 16 if stem == "linear" else 64, 32)
    pixels = torch.randint(0, 256, (3, 32 * 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = exported(pixels)
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
