"""Toy data generators produce the distributions their definitions say."""
import torch

import pytest

from envs.toy_tasks import TASKS, generate, make_task, missing_mask


def test_synthetic9_moments():
    task = make_task("synthetic9")
    batch, z = generate(task, 4000, seed=0, dtype=torch.float64)
    x = batch.obs[..., 0]
    for t in (0, 24):  # Var z_t = 1 + 10 t, E z_t = 0.05 t; x = 0.5 z + N(0, 20)
        var_x = 0.25 * (1 + 10 * t) + 20
        assert abs(float(x[:, t].var()) / var_x - 1) < 0.1
        assert abs(float(z[:, t, 0].mean()) - 0.05 * t) < 4 * (1 + 10 * t) ** 0.5 / 4000 ** 0.5
    resid = x - 0.5 * z[..., 0]
    assert abs(float(resid.var()) / 20 - 1) < 0.03


def test_synthetic10_transition_and_emission_noise():
    task = make_task("synthetic10")
    batch, z = generate(task, 2000, seed=1, dtype=torch.float64)
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


def test_square_observes_the_magnitude_only():
    batch, z = generate(make_task("square"), 3000, seed=2, dtype=torch.float64)
    z, x = z[..., 0], batch.obs[..., 0]
    assert abs(float((x - z * z).var()) / 0.5 - 1) < 0.05
    ar = z[:, 1:] - 0.9 * z[:, :-1]
    assert abs(float(ar.var()) - 1) < 0.05
    assert abs(float((z > 0).double().mean()) - 0.5) < 0.02     # the sign, which x does not tell, is a coin flip


def test_missing_patterns_and_equal_lengths():
    g = torch.Generator().manual_seed(0)
    assert missing_mask("none", 3, 7, g).all()
    random = missing_mask("random", 400, 50, g)
    assert abs(float((~random).double().mean()) - 0.5) < 0.02
    runs = missing_mask("runs", 400, 50, g)
    hidden = ~runs
    # runs of 5: a hidden step's neighbours are hidden far more often than at random
    assert float((hidden[:, 1:] & hidden[:, :-1]).double().sum() / hidden[:, 1:].double().sum()) > 0.7
    assert 0.25 < float(hidden.double().mean()) < 0.45          # 1 - 0.9^5 = 0.41 away from the start
    assert make_task("synthetic9_long").length == 200 and make_task("synthetic9_gaps").missing == "runs"
    batch, _ = generate(make_task("synthetic10_missing"), 50, seed=3)
    assert not batch.mask.all() and batch.mask.any()
    with pytest.raises(ValueError, match="valid choices"):
        missing_mask("sometimes", 1, 1, g)
    assert {"synthetic9", "vsmc_lgssm", "synthetic10", "square"} <= set(TASKS)
