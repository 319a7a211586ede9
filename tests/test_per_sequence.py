"""The per-sequence optimizer finds the analytic mean-field optimum of a linear-Gaussian model."""
import torch

from tests.conftest import lgssm_data, random_lgssm
from world_models import bounds
from world_models.kalman import mean_field_elbo, posterior_precision_diagonal
from world_models.posteriors import make_posterior
from world_models.rollout import per_sample, rollout


def test_q_star_matches_analytic_mean_field_optimum():
    model = random_lgssm(5, z_dim=2, obs_dim=2)
    batch = lgssm_data(model, 3, 8, seed=6, missing=0.2)
    q = make_posterior("per_sequence", model, lr=0.05, n_samples=100, window=50, patience=4, max_steps=1500)
    lam = q.context(model, batch)
    mu, std = lam[..., :2], lam[..., 2:].exp()
    # analytic optimum: means = smoothed means, variances = 1 / diag(posterior precision)
    opt_mu = model.smoother(batch).mean
    opt_var = 1 / torch.diagonal(posterior_precision_diagonal(model.params(), batch.mask), dim1=-2, dim2=-1)
    assert (mu - opt_mu).abs().max() < 0.05, (mu - opt_mu).abs().max()
    assert ((std / opt_var.sqrt()) - 1).abs().max() < 0.05, ((std / opt_var.sqrt()) - 1).abs().max()
    # and its ELBO is within 0.02 nats of the analytic optimum's closed-form ELBO
    p = model.params()
    L_opt = mean_field_elbo(p, batch.obs, batch.actions, batch.mask, opt_mu, opt_var)
    L_found = mean_field_elbo(p, batch.obs, batch.actions, batch.mask, mu, std ** 2)
    assert ((L_opt - L_found) >= -1e-9).all() and ((L_opt - L_found) < 0.02).all(), L_opt - L_found


def test_closed_form_mean_field_elbo_matches_monte_carlo():
    model = random_lgssm(6, z_dim=3, obs_dim=2)
    batch = lgssm_data(model, 4, 6, seed=7, missing=0.3)
    lam = torch.randn(4, 6, 6, dtype=torch.float64) * 0.5
    q = make_posterior("per_sequence", model)
    draws = per_sample(rollout(model, q, batch, lam, 4000).elbo.sum(1), 4000)
    exact = mean_field_elbo(model.params(), batch.obs, batch.actions, batch.mask, lam[..., :3], lam[..., 3:].exp() ** 2)
    se = draws.std(0) / 4000 ** 0.5
    assert ((draws.mean(0) - exact).abs() < 4 * se).all(), ((draws.mean(0) - exact) / se)


def test_approximation_gap_is_zero_only_for_independent_latents():
    """With a diagonal A, Q, P0 and C the exact posterior factorizes over dimensions but not over time:
    the mean-field optimum's ELBO stays strictly below log p(x)."""
    model = random_lgssm(7, z_dim=2, obs_dim=2)
    batch = lgssm_data(model, 3, 8, seed=8)
    p = model.params()
    opt_mu = model.smoother(batch).mean
    opt_var = 1 / torch.diagonal(posterior_precision_diagonal(p, batch.mask), dim1=-2, dim2=-1)
    gap = bounds.exact_log_marginal(model, batch) - mean_field_elbo(p, batch.obs, batch.actions, batch.mask, opt_mu, opt_var)
    assert (gap > 0).all()
