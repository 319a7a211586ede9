"""The exact posterior p(z_{1:T} | x) of a linear-Gaussian SSM, as a guide.

Sampled forward in time from the RTS smoother's Markov chain (kalman.forward_conditionals):
    z_1 ~ N(m_1, P_1|T),  z_{t+1} | z_t ~ N(m_{t+1} + G_t (z_t - m_t), S_{t+1}).
With it, log p(x, z) - log q(z) = log p(x) for every sample: the reference for the estimators.
"""
from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal

from ..base import SequenceBatch
from ..kalman import forward_conditionals
from ..linear_gaussian import LinearGaussianSSM
from .base import Family, FamilyKind, Posterior


class KalmanPosterior(Posterior):
    name = "exact"
    family = Family(FamilyKind.EXACT)
    step_cost = "one Kalman filter + RTS smoother pass, O(T Dz^3)"

    def context(self, model: LinearGaussianSSM, batch: SequenceBatch) -> torch.Tensor:
        if not isinstance(model, LinearGaussianSSM):
            raise TypeError(f"the exact posterior needs a LinearGaussianSSM, got {type(model).__name__}")
        sm = model.smoother(batch)
        G, S = forward_conditionals(sm)
        B, T, D = sm.mean.shape
        G = torch.cat([G.new_zeros(B, 1, D, D), G], 1)                          # G_{t-1} at step t
        m_prev = torch.cat([sm.mean.new_zeros(B, 1, D), sm.mean[:, :-1]], 1)
        ctx = torch.cat([sm.mean, G.flatten(2), m_prev, torch.linalg.cholesky(S).flatten(2)], -1)
        return ctx.to(model.A.dtype)

    def step(self, ctx_t, h_t, z_prev):
        D = self.z_dim
        m, G, m_prev, L = torch.split(ctx_t, [D, D * D, D, D * D], -1)
        mean = m + (G.view(-1, D, D) @ (z_prev - m_prev).unsqueeze(-1)).squeeze(-1)
        return MultivariateNormal(mean, scale_tril=L.view(-1, D, D))
