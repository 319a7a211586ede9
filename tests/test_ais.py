"""AIS and the BDMC sandwich against the exact log p(x) of a linear-Gaussian model (float64)."""
import torch

from tests.conftest import random_lgssm
from tests.test_optimum import analytic_optimum
from world_models import bounds
from world_models.ais import AISSettings, ais, reverse_ais, schedule
from world_models.base import SequenceBatch, sample_sequences
from world_models.posteriors import make_posterior


def simulated(seed: int, n: int = 4, T: int = 6):
    model = random_lgssm(31, z_dim=2, obs_dim=2)
    model.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    actions = torch.randn(n, T, 1, generator=g, dtype=torch.float64)
    z, x = sample_sequences(model, actions, g)
    return model, SequenceBatch(x, actions, torch.ones(n, T, dtype=torch.bool), index=torch.arange(n)), z


def test_schedule_rises_from_0_to_1():
    b = schedule(50)
    assert b[0] == 0 and b[-1] == 1 and (b.diff() > 0).all()


def test_ais_matches_the_exact_log_px_and_bdmc_brackets_it():
    """From the mean-field optimum (about 1.4 nats per sequence below log p(x) here), forward AIS is within 0.05
    nats of the Kalman log p(x) on average; reverse AIS from the latents that generated the data is an upper
    bound; together they bracket the exact value and the sandwich is narrow."""
    torch.manual_seed(0)
    model, batch, z = simulated(5)
    exact = bounds.exact_log_marginal(model, batch)
    lam, _ = analytic_optimum(model, batch)
    q = make_posterior("per_sequence", model)
    elbo_gap = float((exact - bounds.elbo(model, q, batch, 2000, ctx=lam)).mean())
    s = AISSettings(chains=32, steps=1000, leapfrog=2)
    lower, rec = ais(model, q, batch, lam, s)
    upper, _ = reverse_ais(model, q, batch, lam, z, s)
    assert elbo_gap > 0.5                                     # AIS has something to close
    assert abs(float((lower - exact).mean())) < 0.05, lower - exact
    assert float(lower.mean()) < float(exact.mean()) + 0.05 and float(upper.mean()) > float(exact.mean()) - 0.05
    assert float((upper - lower).mean()) < 0.2 and 0.5 < rec["acceptance"] < 0.95


def test_estimates_of_log_px_ignore_the_rewards():
    """The gap analysis drops its windows' rewards (analysis/world_model_gaps.py) so that no rollout computes the
    reward head: valid only while every ELBO, q* fit and log p(x) estimate is of log p(x), not log p(x, r)."""
    from dataclasses import replace

    from world_models.posteriors.optimum import OptimumSettings, optimize
    from world_models.rssm import RSSM
    torch.manual_seed(0)
    model = RSSM((5,), 2, deter_dim=8, z_dim=3, hidden=6).double()
    g = torch.Generator().manual_seed(1)
    with_rewards = SequenceBatch(torch.randn(3, 7, 5, generator=g, dtype=torch.float64),
                                 torch.randn(3, 7, 2, generator=g, dtype=torch.float64),
                                 rewards=torch.randn(3, 7, generator=g, dtype=torch.float64), index=torch.arange(3))
    q = make_posterior("semi_amortized", model, hidden=6).double()

    def estimates(batch):
        torch.manual_seed(2)
        ctx = q.initial_params(model, batch).detach()
        ctx, _ = optimize(model, q, batch, ctx, OptimumSettings(lr=0.05, n_samples=2, max_steps=6, window=2,
                                                                patience=1, select_samples=4))
        return [bounds.elbo(model, q, batch, 4, ctx=ctx), bounds.iwae(model, q, batch, 4, ctx=ctx),
                bounds.smc(model, q, batch, 4, ctx=ctx), ais(model, q, batch, ctx, AISSettings(chains=2, steps=3))[0]]

    for a, b in zip(estimates(with_rewards), estimates(replace(with_rewards, rewards=None))):
        assert torch.equal(a, b)
