"""Scores of mixture predictives against closed forms and a perfectly calibrated synthetic predictor."""
import torch

from analysis.calibration import LEVELS, covered, gaussian_crps, mixture_crps, mixture_nll, pit


def test_one_component_mixture_matches_gaussian_closed_forms():
    g = torch.Generator().manual_seed(0)
    mu, sigma, y = torch.randn(1, 50, 3, generator=g, dtype=torch.float64), 0.7, torch.randn(50, 3, generator=g, dtype=torch.float64)
    nll = -torch.distributions.Normal(mu[0], sigma).log_prob(y).sum(-1)
    assert torch.allclose(mixture_nll(mu, sigma, y), nll)
    assert torch.allclose(mixture_crps(mu, sigma, y), gaussian_crps(mu[0], sigma, y))
    assert torch.allclose(pit(mu, sigma, y), torch.distributions.Normal(mu[0], sigma).cdf(y))


def test_mixture_crps_matches_sample_estimate():
    """CRPS = E|X - y| - 1/2 E|X - X'| estimated with 200k draws from a 3-component mixture."""
    g = torch.Generator().manual_seed(1)
    mu = torch.tensor([[-1.0], [0.5], [2.0]], dtype=torch.float64)
    sigma = torch.tensor([[0.3], [1.0], [0.5]], dtype=torch.float64)
    y = torch.tensor([0.2], dtype=torch.float64)
    comp = torch.randint(0, 3, (2, 200_000), generator=g)
    x = mu[comp, 0] + sigma[comp, 0] * torch.randn(2, 200_000, generator=g, dtype=torch.float64)
    estimate = (x[0] - y).abs().mean() - 0.5 * (x[0] - x[1]).abs().mean()
    assert abs(float(mixture_crps(mu, sigma, y)) - float(estimate)) < 0.01


def test_calibrated_predictor_has_nominal_coverage_and_miscalibrated_does_not():
    """Truth and predictive samples from the same distribution: coverage of every central interval is
    near nominal; a predictor 2x too narrow under-covers."""
    g = torch.Generator().manual_seed(2)
    n, S = 4000, 64
    centre = torch.randn(n, 2, generator=g) * 3             # a different predictive for every target
    spread = 0.5 + torch.rand(n, 2, generator=g)
    y = centre + spread * torch.randn(n, 2, generator=g)
    mu = centre + 0.6 * spread * torch.randn(S, n, 2, generator=g)   # the mixture's means ...
    sigma = 0.8 * spread.expand(S, n, 2)                               # ... and stds: total var = spread^2
    calibrated = pit(mu, sigma, y)
    narrow = pit(mu, sigma / 2, y)
    for level in LEVELS:
        rate = float(covered(calibrated, level).double().mean())
        assert abs(rate - level) < 0.03, (level, rate)
    assert float(covered(narrow, 0.9).double().mean()) < 0.8
