"""The classifier's pool over tokens (`model.pool`): the max is taken over real tokens only
(padding never wins it), and a padded sequence gives the logits of the unpadded one."""
import pytest
import torch

from trainers.config import ModelConfig
from trainers.model import PopulationTransformer

P, B, T, VOCAB, PAD = 2, 3, 7, 11, 0


def listops_like(pool: str) -> PopulationTransformer:
    torch.manual_seed(0)
    return PopulationTransformer(ModelConfig(d_model=16, n_layers=1, n_heads=2, pool=pool), members=P,
                                 vocab_size=VOCAB, max_seq_len=16, causal=False, num_classes=4, pad_id=PAD).eval()


def test_max_pool_equals_a_masked_max_and_ignores_padding():
    torch.set_num_threads(1)
    model = listops_like("max")
    x_PBTD = torch.randn(P, B, T, 5)
    real_PBT = torch.rand(P, B, T) < 0.6
    real_PBT[..., 0] = True  # every sequence has a real token, as key_mask guarantees
    x_PBTD[~real_PBT] = 100.0  # padding would win any unmasked max
    pooled_PBD = model.pooled(x_PBTD, real_PBT)
    for p in range(P):
        for b in range(B):
            assert torch.equal(pooled_PBD[p, b], x_PBTD[p, b][real_PBT[p, b]].amax(0))
    assert torch.equal(model.pooled(x_PBTD, None), x_PBTD.amax(2))  # no padding: every token counts


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_appending_padding_leaves_the_logits_unchanged(pool):
    torch.set_num_threads(1)
    model = listops_like(pool)
    ids_PBT = torch.randint(1, VOCAB, (P, B, T), generator=torch.Generator().manual_seed(1))
    padded_PBT = torch.cat([ids_PBT, torch.full((P, B, 5), PAD)], dim=2)
    torch.testing.assert_close(model(padded_PBT), model(ids_PBT), rtol=1e-5, atol=1e-5)


def test_max_and_mean_differ():
    torch.set_num_threads(1)
    ids_PBT = torch.randint(1, VOCAB, (P, B, T), generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(listops_like("max")(ids_PBT), listops_like("mean")(ids_PBT))
