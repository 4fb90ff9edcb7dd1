"""Every attention kind added from the papers trains end to end like the first five: a
2-worker job (mpiexec, DeepSpeed) of 2 members under PBT with top-k compression, on
ListOps (padded, so the key masks act), a few steps each (configs/tiny_listops.yaml)."""
import pytest

from tests.integration.conftest import train_two_members_under_pbt

# Each kind's options, sized for seq_len 64.
KINDS = {
    "hypercube": ["model.attention.block_size=8"],
    "mra": ["model.attention.block_size=8", "model.attention.blocks_per_row=2"],
    "rpe_fft": ["model.attention.max_offset=32"],  # a table per member and head: the exploit copies it
    "collaborative": ["model.attention.key_dim=8"],  # per-member projections and mixing
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kind_trains_under_pbt_and_compression(tmp_path, kind):
    train_two_members_under_pbt("configs/tiny_listops.yaml", tmp_path, f"model.attention.kind={kind}", *KINDS[kind])
