"""An exported member is that member alone: its logits equal the population model's for
that member, with PyTorch alone (trainers/export.py), and sampling is seeded."""
import pytest
import torch

from trainers.config import ModelConfig
from trainers.export import load_exported, member_tensors, save_member
from trainers.model import PopulationTransformer
from trainers.sampling import generate

P = 3


def population(model: dict, **shape) -> tuple[PopulationTransformer, dict]:
    config = ModelConfig.model_validate(model)
    torch.manual_seed(0)
    net = PopulationTransformer(config, members=P, **shape).eval()
    return net, {"model": config.model_dump(mode="json"), "task": {"kind": "stdlib_code"}, "shape": shape,
                 "source": {}}


LM = {"vocab_size": 256, "max_seq_len": 16, "causal": True, "num_classes": None, "pad_id": None}
CLASSIFIER = {"vocab_size": 20, "max_seq_len": 16, "causal": False, "num_classes": 10, "pad_id": 0}
# An image task: the export must carry the grid (config.json holds it as a list) for ripple.
IMAGES = {"vocab_size": 256, "max_seq_len": 16, "causal": False, "num_classes": 2, "pad_id": None, "grid": (4, 4)}
# The conv stem makes a token per 4x4 pixels: the export must carry the patch size too.
STEM = {**IMAGES, "patch_size": 4}


@pytest.mark.parametrize("model,shape", [
    ({"d_model": 32, "n_layers": 2, "n_heads": 2}, LM),
    ({"d_model": 32, "n_layers": 1, "n_heads": 2, "attention": {"kind": "performer", "nb_features": 8}}, LM),
    ({"d_model": 32, "n_layers": 1, "n_heads": 2, "attention": {"kind": "flash", "group_size": 4, "qk_dim": 8}}, LM),
    ({"d_model": 32, "n_layers": 1, "n_heads": 2}, CLASSIFIER),
    ({"d_model": 32, "n_layers": 1, "n_heads": 2, "attention": {"kind": "ripple", "rings": 2}}, IMAGES),
    ({"d_model": 32, "n_layers": 1, "n_heads": 2, "image_stem": "conv", "pool": "max"}, STEM),
])
def test_exported_member_has_the_members_logits(tmp_path, model, shape):
    net, config = population(model, **shape)
    ids_PBT = torch.randint(1, shape["vocab_size"], (P, 2, 16 * shape.get("patch_size", 1) ** 2))  # 16 tokens
    member = 1
    exported = load_exported(save_member(tmp_path / "export", net.state_dict(), member=member, members=P,
                                         config=config))
    with torch.no_grad():
        expected = net(ids_PBT)[member]
        got = exported(ids_PBT[member])
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    others = [m for m in range(P) if m != member]
    assert all(not torch.allclose(got, net(ids_PBT)[m].detach()) for m in others)  # not some other member


def test_member_axis_is_removed_and_shared_tensors_kept():
    net, _ = population({"d_model": 32, "n_layers": 1, "n_heads": 2,
                         "attention": {"kind": "performer", "nb_features": 8}}, **LM)
    single = PopulationTransformer(ModelConfig.model_validate({"d_model": 32, "n_layers": 1, "n_heads": 2,
                                                               "attention": {"kind": "performer", "nb_features": 8}}),
                                   members=1, **LM)
    tensors, with_axis = member_tensors(net.state_dict(), 2, P, single.state_dict())
    assert tensors["tok_emb.weight"].shape == net.tok_emb.weight.shape[1:]
    shared = [name for name in tensors if name not in with_axis]
    assert shared and all(torch.equal(tensors[n], net.state_dict()[n]) for n in shared)


def test_generation_is_seeded_and_refused_for_classifiers(tmp_path):
    net, config = population({"d_model": 32, "n_layers": 1, "n_heads": 2}, **LM)
    model = load_exported(save_member(tmp_path / "lm", net.state_dict(), member=0, members=P, config=config))
    first = generate(model, list(b"def "), tokens=20, temperature=1.0, seed=3)
    assert len(first) == 20 and all(0 <= i < 256 for i in first)
    assert generate(model, list(b"def "), tokens=20, temperature=1.0, seed=3) == first
    # Longer than the learned positions: the context slides.
    assert len(generate(model, list(b"x" * 30), tokens=3, temperature=0)) == 3
    net, config = population({"d_model": 32, "n_layers": 1, "n_heads": 2}, **CLASSIFIER)
    classifier = load_exported(save_member(tmp_path / "cls", net.state_dict(), member=0, members=P, config=config))
    with pytest.raises(ValueError, match="language model"):
        generate(classifier, [1, 2], tokens=1)
