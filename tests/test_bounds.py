"""Estimators against exact log p(x) on linear-Gaussian models, and their proven ordering."""
import pytest
import torch

from tests.conftest import lgssm_data, random_lgssm
from world_models import bounds
from world_models.rollout import per_sample, rollout
from world_models.posteriors import KalmanPosterior, Objective, make_posterior
from world_models.training import train


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_elbo_of_exact_posterior_is_log_marginal(missing):
    model = random_lgssm(0, z_dim=3, obs_dim=2)
    batch = lgssm_data(model, 6, 12, seed=1, missing=missing)
    exact = bounds.exact_log_marginal(model, batch)
    q = KalmanPosterior(model)
    # every sample gives log p(x, z) - log q(z) = log p(x): equal to float precision
    torch.testing.assert_close(bounds.elbo(model, q, batch, 4, kl="sample"), exact, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(bounds.iwae(model, q, batch, 4), exact, rtol=1e-9, atol=1e-9)
    # with the KL in closed form per step the estimate is unbiased but noisy: within 4 standard errors
    draws = per_sample(rollout(model, q, batch, q.context(model, batch), 400).elbo.sum(1), 400)
    se = draws.std(0) / 20
    assert ((draws.mean(0) - exact).abs() < 4 * se + 1e-6).all()


def _trained_filter(model, batch):
    q = make_posterior("amortized", model, hidden=16).double()
    model.requires_grad_(False)
    train(lambda b: q.training_loss(model, b, Objective()), q.parameters(), batch, 60, 16, lr=1e-2)
    return q


def test_bound_ordering_on_average():
    model = random_lgssm(1, z_dim=2, obs_dim=2)
    batch = lgssm_data(model, 32, 10, seed=2)
    q = _trained_filter(model, batch)
    exact = float(bounds.exact_log_marginal(model, batch).mean())
    L = float(bounds.elbo(model, q, batch, 500).mean())
    iwae = {k: float(bounds.iwae(model, q, batch, k).mean()) for k in (5, 50, 500)}
    assert L < iwae[5] < iwae[50] < iwae[500] <= exact + 1e-3, (L, iwae, exact)
    assert exact - L > 0.1   # a real gap, so the ordering is not vacuous


def test_smc_many_particles_close_to_exact():
    model = random_lgssm(2, z_dim=2, obs_dim=2, obs_noise=1.0)
    batch = lgssm_data(model, 8, 10, seed=3)
    exact = bounds.exact_log_marginal(model, batch)
    est = bounds.smc(model, None, batch, 4000)
    assert abs(float((est - exact).mean())) < 0.1, (est - exact)
    # with the exact posterior as proposal SMC is far tighter
    est_q = bounds.smc(model, KalmanPosterior(model), batch, 200)
    assert float((est_q - exact).abs().mean()) < 0.05


def test_smc_resamples_and_stays_below_exact_on_average():
    """A poor proposal forces resampling; log Z_hat is still a stochastic lower bound."""
    model = random_lgssm(3, z_dim=1, obs_dim=1, obs_noise=0.05)
    batch = lgssm_data(model, 8, 15, seed=4)
    exact = bounds.exact_log_marginal(model, batch)
    reps = torch.stack([bounds.smc(model, None, batch, 200) for _ in range(5)]).mean(0)
    assert float((reps - exact).mean()) < 0.0
    assert float((reps - exact).mean()) > -2.0
