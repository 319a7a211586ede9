"""Nonlinear SSM without a deterministic path: MLP mean and std for transition and emission.

    z_1 ~ N(mu_0, diag sigma_0^2)
    z_t ~ N(f(z_{t-1}, a_{t-1}), diag s(z_{t-1}, a_{t-1})^2)
    x_t ~ N(g(z_t), diag r(z_t)^2)
"""
from __future__ import annotations

import torch
from torch import nn

from .base import ModelState, SequenceModel, diag_normal
from .networks import mlp, softplus_std


class NonlinearSSM(SequenceModel):
    def __init__(self, z_dim: int, obs_dim: int, action_dim: int = 1, hidden: int = 64, layers: int = 2,
                 min_std: float = 0.01):
        super().__init__()
        self.z_dim, self.action_dim, self.obs_shape, self.min_std = z_dim, action_dim, (obs_dim,), min_std
        self.init_mean = nn.Parameter(torch.zeros(z_dim))
        self.init_std_raw = nn.Parameter(torch.ones(z_dim))
        self.transition = mlp(z_dim + action_dim, hidden, 2 * z_dim, layers)
        self.decoder = mlp(z_dim, hidden, 2 * obs_dim, layers)

    def prior_step(self, state: ModelState, action, t):
        if t == 0:
            mean = self.init_mean.expand(state.z.shape)
            return state.h, diag_normal(mean, softplus_std(self.init_std_raw, self.min_std).expand(state.z.shape))
        # residual parameterization: f(z, a) = z + MLP(z, a)_mean
        mean, raw = self.transition(torch.cat([state.z, action], -1)).chunk(2, -1)
        return state.h, diag_normal(state.z + mean, softplus_std(raw, self.min_std))

    def emission(self, h, z):
        mean, raw = self.decoder(z).chunk(2, -1)
        return diag_normal(mean, softplus_std(raw, self.min_std))

    @torch.no_grad()
    def noise_summary(self, z: torch.Tensor | None = None) -> dict[str, float]:
        """Learned variances averaged over latent states z (N, Dz); defaults to standard-normal draws."""
        if z is None:
            z = torch.randn(1000, self.z_dim, generator=torch.Generator().manual_seed(0)).to(self.init_mean)
        a = z.new_zeros(z.shape[0], self.action_dim)
        _, prior = self.prior_step(ModelState(z[:, :0], z), a, 1)
        return {"transition_var": float(prior.variance.mean()), "emission_var": float(self.emission(None, z).variance.mean())}
