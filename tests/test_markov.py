"""The Markov-Gaussian family contains the exact LGSSM posterior: its q* has approximation gap 0 (float64)."""
import math

import torch
from torch.distributions import MultivariateNormal

from tests.conftest import lgssm_data, random_lgssm
from world_models import bounds
from world_models.kalman import forward_conditionals
from world_models.posteriors.markov import LOG_DIAG_FLOOR, MarkovGaussianLocal
from world_models.posteriors.optimum import OptimumSettings, optimize
from world_models.rollout import rollout


def exact_markov_context(model, batch, q: MarkovGaussianLocal) -> torch.Tensor:
    """p(z_t | z_{t-1}, x) = N(G_{t-1} z_{t-1} + m_t - G_{t-1} m_{t-1}, S_t) as a Markov-Gaussian context."""
    sm = model.smoother(batch)
    G, S = forward_conditionals(sm)
    B, T, D = sm.mean.shape
    A = torch.cat([G.new_zeros(B, 1, D, D), G], 1)
    m_prev = torch.cat([sm.mean.new_zeros(B, 1, D), sm.mean[:, :-1]], 1)
    b = sm.mean - (A @ m_prev.unsqueeze(-1)).squeeze(-1)
    return q.pack(b, A, torch.linalg.cholesky(S))


def test_pack_and_unpack_are_inverse():
    model = random_lgssm(1, z_dim=3, obs_dim=2)
    q = MarkovGaussianLocal(model)
    ctx = torch.randn(2, 4, 3 + 9 + 6, dtype=torch.float64)
    torch.testing.assert_close(q.pack(*q.unpack(ctx)), ctx)


def test_a_log_diagonal_far_below_float32_range_keeps_l_positive_with_a_gradient_and_normal_values_exact():
    """raw log L_ii = -120 (exp underflows to 0 in float32, a singular L): floored at about LOG_DIAG_FLOOR, a valid
    Cholesky factor whose entropy still has a positive gradient; values above FLOOR + 20 pass bit for bit; pack
    inverts."""
    model = random_lgssm(1, z_dim=2, obs_dim=2)
    q = MarkovGaussianLocal(model)
    ctx = torch.randn(3, 4, 2 + 4 + 3)
    ctx[0, 0, 6] = -120.0                        # the first diagonal entry of L at (0, 0)
    ctx.requires_grad_(True)
    b, A, L = q.unpack(ctx)
    assert math.isclose(float(L[0, 0, 0, 0].detach().log()), LOG_DIAG_FLOOR, rel_tol=1e-4)
    (g,) = torch.autograd.grad(MultivariateNormal(b, scale_tril=L).entropy().sum(), ctx)
    assert float(g[0, 0, 6]) > 0                                      # sigmoid(-70): small, not 0
    normal = torch.ones_like(ctx, dtype=torch.bool)
    normal[0, 0, 6] = False
    diag = torch.zeros(9, dtype=torch.bool)
    diag[[6, 8]] = True
    assert torch.equal(L[..., [0, 1], [0, 1]].log()[normal[..., diag]], ctx[..., diag][normal[..., diag]].exp().log())
    torch.testing.assert_close(q.pack(b, A, L)[1:], ctx[1:].detach())
    low = ctx.detach().double()
    low[0, 0, 6] = -45.0                         # inside the soft floor: pack still inverts unpack
    torch.testing.assert_close(q.pack(*q.unpack(low)), low)


def test_the_exact_posterior_is_in_the_family_and_its_elbo_is_log_px():
    model = random_lgssm(2, z_dim=2, obs_dim=2)
    batch = lgssm_data(model, 5, 7, seed=3, missing=0.3)
    q = MarkovGaussianLocal(model)
    ctx = exact_markov_context(model, batch, q)
    exact = bounds.exact_log_marginal(model, batch)
    ro = rollout(model, q, batch, ctx, 4)            # at the exact posterior every log weight is log p(x)
    torch.testing.assert_close(ro.log_weight.sum(1).view(4, -1), exact.expand(4, -1), rtol=0, atol=1e-8)


def test_its_q_star_reaches_the_exact_log_px():
    """Optimized from N(0, I) per step, the Markov-Gaussian q* closes the approximation gap (0 within Monte Carlo
    error: 0.002-0.004 nats per step), where the mean-field optimum cannot (0.069 nats per step here)."""
    torch.manual_seed(0)
    model = random_lgssm(4, z_dim=2, obs_dim=2)
    model.requires_grad_(False)
    batch = lgssm_data(model, 4, 6, seed=5)
    q = MarkovGaussianLocal(model)
    lam, report = optimize(model, q, batch, q.initial_params(model, batch),
                           OptimumSettings(lr=0.05, n_samples=16, max_steps=3000, window=50, patience=6))
    exact = bounds.exact_log_marginal(model, batch)
    gap = (exact - bounds.elbo(model, q, batch, 4000, ctx=lam, kl="sample")) / batch.length
    assert float(gap.mean()) < 0.01 and float(gap.mean()) > -0.005, (gap, report)


def test_the_amortized_markov_encoder_beats_the_mean_field_smoother_and_is_refinable():
    """Trained alike on a fixed LGSSM, the Markov-Gaussian encoder's held-out ELBO is closer to log p(x) than the
    mean-field smoother encoder's (measured: 0.110 vs 0.163 nats per step after 400 steps); gradient steps on its
    output (its context is lambda) raise its ELBO further."""
    from tests.test_optimum import analytic_optimum
    from world_models.posteriors import Objective, RefineSettings, make_posterior
    from world_models.posteriors.refine import refine
    from world_models.training import train
    torch.manual_seed(0)
    model = random_lgssm(4, z_dim=2, obs_dim=2)
    model.requires_grad_(False)
    data, test = lgssm_data(model, 200, 6, seed=5), lgssm_data(model, 50, 6, seed=6)
    exact = bounds.exact_log_marginal(model, test)
    gaps, trained = {}, {}
    for name in ("amortized_markov", "amortized_smoothing"):
        q = trained[name] = make_posterior(name, model).double()
        train(lambda b: q.training_loss(model, b, Objective()), q.parameters(), data, 400, 50, lr=1e-2)
        gaps[name] = float((exact - bounds.elbo(model, q, test, 500)).mean()) / test.length
    assert gaps["amortized_markov"] < gaps["amortized_smoothing"] - 0.03, gaps
    markov = trained["amortized_markov"]
    assert "Markov" in str(markov.family) and "Markov" not in str(trained["amortized_smoothing"].family)
    with torch.no_grad():
        lam0 = markov.initial_params(model, test)
    lam = refine(model, markov, test, lam0, RefineSettings(steps=50, lr=0.02, n_samples=8))
    before, after = (float(bounds.elbo(model, markov, test, 500, ctx=c).mean()) for c in (lam0, lam))
    assert after > before
    _, mean_field_best = analytic_optimum(model, test)
    assert float((exact - mean_field_best).mean()) / test.length > 0.05    # the mean-field family's floor here


def test_amortized_markov_is_for_models_without_h_only():
    import pytest
    from world_models.posteriors import POSTERIORS, make_posterior
    from world_models.rssm import RSSM
    assert "amortized_markov" not in POSTERIORS                 # not an agent choice
    with pytest.raises(ValueError, match="ignores h_t"):
        make_posterior("amortized_markov", RSSM((3,), 1, deter_dim=8, z_dim=2, hidden=8))
