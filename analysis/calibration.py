"""Scores of a predictive distribution that is a mixture of S Gaussians with equal weights,
p(y) = 1/S sum_s N(y; mu_s, diag sigma_s^2), as open-loop predictions from S latent samples are.
All per dimension unless said; inputs broadcast as mu (S, ..., D), sigma (S, ..., D) or scalar, y (..., D).

    NLL       -log 1/S sum_s prod_d N(y_d; mu_sd, sigma_sd^2)                   (summed over D)
    PIT       F(y_d) = 1/S sum_s Phi((y_d - mu_sd) / sigma_sd)
    coverage  y_d lies in the central p interval  <=>  |F(y_d) - 1/2| <= p / 2
    CRPS      E|X - y| - 1/2 E|X - X'|, in closed form for Gaussian mixtures (Grimit et al. 2006):
              E|X - y| = 1/S sum_s A(y - mu_s, sigma_s^2),  E|X - X'| = 1/S^2 sum_{s,s'} A(mu_s - mu_s', sigma_s^2 + sigma_s'^2),
              A(m, v) = 2 sqrt(v) phi(m / sqrt(v)) + m (2 Phi(m / sqrt(v)) - 1)
A calibrated predictor has PIT ~ Uniform(0, 1), hence coverage p at every level p.
"""
from __future__ import annotations

import math

import torch

LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))   # nominal coverages for the calibration curve


def _std_normal():
    return torch.distributions.Normal(0.0, 1.0)


def mixture_nll(mu: torch.Tensor, sigma, y: torch.Tensor) -> torch.Tensor:
    """(...,): NLL summed over the last dimension."""
    sigma = torch.as_tensor(sigma, dtype=mu.dtype).expand_as(mu)
    log_p = torch.distributions.Normal(mu, sigma).log_prob(y.unsqueeze(0)).sum(-1)   # (S, ...)
    return -(torch.logsumexp(log_p, 0) - math.log(mu.shape[0]))


def pit(mu: torch.Tensor, sigma, y: torch.Tensor) -> torch.Tensor:
    """(..., D): the predictive CDF at the truth."""
    sigma = torch.as_tensor(sigma, dtype=mu.dtype).expand_as(mu)
    return _std_normal().cdf((y.unsqueeze(0) - mu) / sigma).mean(0)


def covered(pit_values: torch.Tensor, level: float) -> torch.Tensor:
    """Whether the truth lies in the central `level` interval of the predictive (bool, same shape)."""
    return (pit_values - 0.5).abs() <= level / 2


def _a(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    s = v.sqrt()
    n = _std_normal()
    return 2 * s * n.log_prob(m / s).exp() + m * (2 * n.cdf(m / s) - 1)


def mixture_crps(mu: torch.Tensor, sigma, y: torch.Tensor) -> torch.Tensor:
    """(..., D): CRPS of the mixture per dimension (same units as y; lower is better)."""
    var = torch.as_tensor(sigma, dtype=mu.dtype).expand_as(mu) ** 2
    to_truth = _a(y.unsqueeze(0) - mu, var).mean(0)
    S = mu.shape[0]
    m, v = mu.reshape(S, -1), var.reshape(S, -1)
    chunk = max(1, 10_000_000 // (S * S))            # the S x S pairs, a chunk of columns at a time
    between = torch.cat([_a(m[None, :, i:i + chunk] - m[:, None, i:i + chunk],
                            v[None, :, i:i + chunk] + v[:, None, i:i + chunk]).mean((0, 1))
                         for i in range(0, m.shape[1], chunk)])
    return to_truth - 0.5 * between.reshape(mu.shape[1:])


def gaussian_crps(mu: torch.Tensor, sigma, y: torch.Tensor) -> torch.Tensor:
    """CRPS of N(mu, sigma^2): sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)], z = (y - mu) / sigma."""
    sigma = torch.as_tensor(sigma, dtype=mu.dtype)
    z = (y - mu) / sigma
    n = _std_normal()
    return sigma * (z * (2 * n.cdf(z) - 1) + 2 * n.log_prob(z).exp() - 1 / math.sqrt(math.pi))
