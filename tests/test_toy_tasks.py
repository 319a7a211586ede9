"""Toy data generators produce the distributions their definitions say."""
import torch

from envs.toy_tasks import generate, make_task


def test_synthetic9_moments():
    task = make_task("synthetic9")
    batch, z = generate(task, 4000, 25, seed=0, dtype=torch.float64)
    x = batch.obs[..., 0]
    for t in (0, 24):  # Var z_t = 1 + 10 t, E z_t = 0.05 t; x = 0.5 z + N(0, 20)
        var_x = 0.25 * (1 + 10 * t) + 20
        assert abs(float(x[:, t].var()) / var_x - 1) < 0.1
        assert abs(float(z[:, t, 0].mean()) - 0.05 * t) < 4 * (1 + 10 * t) ** 0.5 / 4000 ** 0.5
    resid = x - 0.5 * z[..., 0]
    assert abs(float(resid.var()) / 20 - 1) < 0.03


def test_synthetic10_transition_and_emission_noise():
    task = make_task("synthetic10")
    batch, z = generate(task, 2000, 10, seed=1, dtype=torch.float64)
    z = z[..., 0]
    step = z[:, 1:] - (2 * torch.sin(z[:, :-1]) + z[:, :-1])
    assert abs(float(step.mean())) < 0.05 and abs(float(step.var()) / 5 - 1) < 0.05
    assert abs(float(z[:, 0].std()) - 0.1) < 0.01
    assert abs(float((batch.obs[..., 0] - 0.5 * z).var()) / 5 - 1) < 0.05


def test_vsmc_lgssm_structure():
    p = make_task("vsmc_lgssm").true_model.params()
    assert torch.allclose(p.A[0, 0], torch.tensor(0.42, dtype=p.A.dtype), atol=1e-6)
    assert torch.allclose(p.A[0, 2], torch.tensor(0.42 ** 3, dtype=p.A.dtype), atol=1e-6)
    assert p.C.shape == (3, 5) and (p.C == 0).any()
    assert torch.allclose(p.R, 0.1 * torch.eye(3, dtype=p.R.dtype), atol=1e-6)
