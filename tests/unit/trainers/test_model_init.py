"""The model's starting choices (`model.positions`, `model.classifier_init`): without positions
the classifier sees a set of tokens (a permutation leaves its logits unchanged, as it does not
with learned positions), and fan_in starts the classifier at torch.nn.Linear's spread."""
import pytest
import torch

from trainers.config import ModelConfig
from trainers.model import PopulationTransformer

P, B, T, VOCAB = 2, 3, 9, 11


def classifier(**options) -> PopulationTransformer:
    torch.manual_seed(0)
    return PopulationTransformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, **options), members=P,
                                 vocab_size=VOCAB, max_seq_len=16, causal=False, num_classes=4).eval()


@pytest.mark.parametrize("positions, unchanged", [("none", True), ("learned", False)])
def test_without_positions_a_permutation_of_the_tokens_leaves_the_logits_unchanged(positions, unchanged):
    torch.set_num_threads(1)
    model = classifier(positions=positions)
    ids_PBT = torch.randint(0, VOCAB, (P, B, T), generator=torch.Generator().manual_seed(1))
    shuffled_PBT = ids_PBT[..., torch.randperm(T, generator=torch.Generator().manual_seed(2))]
    assert torch.allclose(model(shuffled_PBT), model(ids_PBT), atol=1e-5) == unchanged
    assert (model.pos_emb is None) == (positions == "none")


def test_fan_in_classifier_has_linear_spread_and_small_keeps_0_02():
    fan_in = classifier(classifier_init="fan_in").classifier.weight
    small = classifier().classifier.weight
    assert fan_in.std().item() == pytest.approx((3 * 32) ** -0.5, rel=0.1)  # 256 draws: ~5% spread
    assert small.std().item() == pytest.approx(0.02, rel=0.1)
