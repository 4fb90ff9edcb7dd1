"""vars (VARS-D) against its exact limits, in float64: with the plain soft threshold, 0 steps
and lambda = 0 give Phi Phi^T V; lambda = 0 and many steps converge to the least-squares
projection of V onto Phi's columns; a very large lambda gives 0. Phi is rebuilt here from
the formula (positive random features of q / |q|, columns of unit norm over the tokens),
not from the kernel's helpers. Also: learned factors per member, a fixed seeded projection,
and the global RNG untouched."""
import pytest
import torch

from trainers.attention import KERNELS
from trainers.config import ModelConfig
from trainers.model import PopulationTransformer

N, H, T, K = 4, 2, 64, 4


def vars_kernel(*, members: int = 2, head_dim: int = K, layer: int = 0, **options):
    config = ModelConfig(attention={"kind": "vars", **options}).attention
    return KERNELS["vars"](config, members=members, head_dim=head_dim, causal=False, layer=layer).double()


def qkv(length: int = T, head_dim: int = K):
    generator = torch.Generator().manual_seed(3)
    return [torch.randn(N, H, length, head_dim, generator=generator, dtype=torch.float64) for _ in range(3)]


def features(q_NHTK: torch.Tensor, projection_MK: torch.Tensor) -> torch.Tensor:
    """Phi from the formula: phi_tm = exp(q^_t . w_m - 1/2) / sqrt(M), each column / its norm."""
    unit_NHTK = q_NHTK / q_NHTK.norm(dim=-1, keepdim=True)
    M = projection_MK.shape[0]
    phi_NHTM = torch.exp(unit_NHTK @ projection_MK.T.double() - 0.5) / M ** 0.5
    return phi_NHTM / phi_NHTM.norm(dim=-2, keepdim=True)


def test_no_steps_and_no_sparsity_give_phi_phi_transpose_v():
    kernel = vars_kernel(lam=0.0, num_steps=0, shrink="soft")
    q, k, v = qkv()
    phi = features(q, kernel.projection_MK)
    torch.testing.assert_close(kernel(q, k, v), phi @ (phi.transpose(-2, -1) @ v), rtol=1e-10, atol=1e-12)


def test_key_dictionary_reads_the_code_out_with_the_queries():
    q, k, v = qkv()
    kernel = vars_kernel(lam=0.0, num_steps=0, shrink="soft", dictionary="keys")
    phi_q, phi_k = features(q, kernel.projection_MK), features(k, kernel.projection_MK)
    torch.testing.assert_close(kernel(q, k, v), phi_q @ (phi_k.transpose(-2, -1) @ v), rtol=1e-10, atol=1e-12)
    # With keys equal to queries it is the reference's tied form, at the default options too.
    torch.testing.assert_close(vars_kernel(dictionary="keys")(q, q, v), vars_kernel()(q, k, v), rtol=0, atol=0)


def least_squares_projection(phi: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return phi @ torch.linalg.lstsq(phi, v).solution


def test_no_sparsity_converges_to_the_least_squares_projection():
    # feature_ratio 1 (M = 4 <= T): Phi has full column rank and G is conditioned well enough
    # (smallest eigenvalue ~0.03 against L ~ 5) for 5000 steps to reach 1e-9.
    q, k, v = qkv()
    kernel = vars_kernel(lam=0.0, num_steps=5000, shrink="soft", feature_ratio=1)
    exact = least_squares_projection(features(q, kernel.projection_MK), v)
    torch.testing.assert_close(kernel(q, k, v), exact, rtol=0, atol=1e-9)


def test_error_to_the_projection_falls_with_the_steps_at_the_default_feature_ratio():
    q, k, v = qkv()
    exact = least_squares_projection(features(q, vars_kernel().projection_MK), v)
    with torch.no_grad():
        errors = [float((vars_kernel(lam=0.0, num_steps=steps, shrink="soft")(q, k, v) - exact).norm())
                  for steps in (0, 10, 100, 1000, 10000)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-2 * errors[0]


@pytest.mark.parametrize("shrink", ["gelu", "soft"])
def test_very_large_sparsity_gives_zero(shrink):
    q, k, v = qkv()
    out = vars_kernel(lam=1e6, shrink=shrink)(q, k, v)
    assert torch.equal(out, torch.zeros_like(out))


def test_gelu_shrink_is_not_the_identity_at_zero_threshold():
    """Why the oracles use `soft`: the reference's shrink keeps gelu(|z|), not |z|."""
    q, k, v = qkv()
    soft, gelu = (vars_kernel(lam=0.0, num_steps=0, shrink=s)(q, k, v) for s in ("soft", "gelu"))
    assert not torch.allclose(soft, gelu)


def test_default_steps_sit_between_the_dense_and_the_projected_values():
    """Defaults (lam 0.3, 5 steps, gelu): finite, non-zero, and not a copy of either limit."""
    q, k, v = qkv()
    out = vars_kernel()(q, k, v)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    assert not torch.allclose(out, vars_kernel(lam=0.0, num_steps=0, shrink="soft")(q, k, v))


def test_projection_is_seeded_per_layer_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    first, again, other_layer, other_seed = (vars_kernel(), vars_kernel(), vars_kernel(layer=1), vars_kernel(seed=1))
    assert torch.equal(torch.get_rng_state(), state)
    assert first.projection_MK.shape == (2 * K, K)  # feature_ratio 2
    assert torch.equal(first.projection_MK, again.projection_MK)
    assert not torch.equal(first.projection_MK, other_layer.projection_MK)
    assert not torch.equal(first.projection_MK, other_seed.projection_MK)


def test_each_member_uses_its_own_learned_factors():
    """N = P*B member-major: member p's rows use A[p], s_lam[p] and s_L[p] only."""
    kernel = vars_kernel(members=2)
    q, k, v = qkv()  # N = 4: member 0 is rows 0-1, member 1 rows 2-3
    before = kernel(q, k, v)
    with torch.no_grad():
        kernel.mix_PMM[1] += 0.05 * torch.randn_like(kernel.mix_PMM[1])
        kernel.lam_scale_P1[1] = 2.0
        kernel.step_scale_P1[1] = 0.5
    after = kernel(q, k, v)
    torch.testing.assert_close(after[:2], before[:2], rtol=0, atol=0)
    assert not torch.allclose(after[2:], before[2:])


def test_population_transformer_trains_every_members_factors():
    config = ModelConfig(d_model=16, n_heads=2, n_layers=2, attention={"kind": "vars"})
    torch.manual_seed(0)
    model = PopulationTransformer(config, members=2, vocab_size=11, max_seq_len=24, causal=False, num_classes=3,
                                  pad_id=0)
    ids = torch.randint(1, 11, (2, 3, 24), generator=torch.Generator().manual_seed(1))
    logits = model(ids)
    assert logits.shape == (2, 3, 3)
    logits.square().sum().backward()
    for block in model.blocks:
        kernel = block.attn.kernel
        for param in (kernel.mix_PMM, kernel.lam_scale_P1, kernel.step_scale_P1):
            assert param.shape[0] == 2 and (param.grad.reshape(2, -1).abs().sum(1) > 0).all()
    # Keys are tied to queries (as in the reference): the key third of qkv gets no gradient.
    key_columns = model.blocks[0].attn.qkv.weight.grad[:, :, 16:32]
    assert torch.equal(key_columns, torch.zeros_like(key_columns))


def test_causal_is_refused():
    config = ModelConfig(attention={"kind": "vars"}).attention
    with pytest.raises(ValueError, match="no causal form"):
        KERNELS["vars"](config, members=1, head_dim=K, causal=True)
