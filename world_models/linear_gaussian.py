"""Linear-Gaussian SSM with learnable A, B, C, Q, R, m0, P0 and exact inference (Kalman + RTS)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.distributions import MultivariateNormal

from .base import ModelState, SequenceBatch, SequenceModel
from .kalman import LGParams, kalman_filter, rts_smoother


def _tril_param(cov: torch.Tensor) -> torch.Tensor:
    """Unconstrained parameter of a covariance: its Cholesky factor with log diagonal."""
    L = torch.linalg.cholesky(cov)
    return L.tril(-1) + torch.diag_embed(L.diagonal().log())


def _tril(param: torch.Tensor) -> torch.Tensor:
    """Cholesky factor from the unconstrained parameter: strictly-lower part + exp(diagonal)."""
    return param.tril(-1) + torch.diag_embed(param.diagonal().exp())


class LinearGaussianSSM(SequenceModel):
    """z_1 ~ N(m0, P0); z_t = A z_{t-1} + B a_{t-1} + N(0, Q); x_t = C z_t + N(0, R)."""

    def __init__(self, z_dim: int, obs_dim: int, action_dim: int = 1, params: Optional[LGParams] = None,
                 init_scale: float = 0.5, dtype=torch.float32):
        super().__init__()
        self.z_dim, self.action_dim, self.obs_shape = z_dim, action_dim, (obs_dim,)
        if params is None:
            g = torch.Generator().manual_seed(0)
            params = LGParams(A=0.9 * torch.eye(z_dim), B=torch.zeros(z_dim, action_dim),
                              C=init_scale * torch.randn(obs_dim, z_dim, generator=g),
                              Q=torch.eye(z_dim), R=torch.eye(obs_dim), m0=torch.zeros(z_dim), P0=torch.eye(z_dim))
        self._check(params, z_dim, obs_dim, action_dim)
        params = params.double()
        self.A = nn.Parameter(params.A.to(dtype).clone())
        self.B = nn.Parameter(params.B.to(dtype).clone())
        self.C = nn.Parameter(params.C.to(dtype).clone())
        self.m0 = nn.Parameter(params.m0.to(dtype).clone())
        self.Q_param = nn.Parameter(_tril_param(params.Q).to(dtype))
        self.R_param = nn.Parameter(_tril_param(params.R).to(dtype))
        self.P0_param = nn.Parameter(_tril_param(params.P0).to(dtype))

    @staticmethod
    def _check(p: LGParams, z_dim, obs_dim, action_dim):
        want = dict(A=(z_dim, z_dim), B=(z_dim, action_dim), C=(obs_dim, z_dim), Q=(z_dim, z_dim),
                    R=(obs_dim, obs_dim), m0=(z_dim,), P0=(z_dim, z_dim))
        for name, shape in want.items():
            got = tuple(getattr(p, name).shape)
            if got != shape:
                raise ValueError(f"LGSSM parameter {name} must have shape {shape} for z_dim={z_dim}, "
                                 f"obs_dim={obs_dim}, action_dim={action_dim}; got {got}")

    def params(self) -> LGParams:
        chol = lambda P: (lambda L: L @ L.T)(_tril(P))
        return LGParams(self.A, self.B, self.C, chol(self.Q_param), chol(self.R_param), self.m0, chol(self.P0_param))

    def prior_step(self, state: ModelState, action: torch.Tensor, t: int):
        h = state.h
        if t == 0:
            mean = self.m0.expand(state.z.shape)
            return h, MultivariateNormal(mean, scale_tril=_tril(self.P0_param))
        return h, MultivariateNormal(state.z @ self.A.T + action @ self.B.T, scale_tril=_tril(self.Q_param))

    def emission(self, h, z):
        return MultivariateNormal(z @ self.C.T, scale_tril=_tril(self.R_param))

    def log_marginal(self, batch: SequenceBatch) -> torch.Tensor:
        """Exact log p(x_t | x_{<t}) per step, (B, T), float64 (differentiable in the parameters)."""
        self.check_batch(batch)
        return kalman_filter(self.params(), batch.obs, batch.actions, batch.mask).log_lik

    def smoother(self, batch: SequenceBatch):
        p = self.params()
        return rts_smoother(p, kalman_filter(p, batch.obs, batch.actions, batch.mask))

    @torch.no_grad()
    def noise_summary(self) -> dict[str, float]:
        p = self.params()
        # Q and R are only identified up to the scale of z: report R (in x units), Q in the units of
        # the emission C z, and the raw Q for 1-d models where C is a scalar.
        CQC = p.C @ p.Q @ p.C.T
        return {"transition_var": float(p.Q.diagonal().mean()), "emission_var": float(p.R.diagonal().mean()),
                "transition_var_in_obs_units": float(CQC.diagonal().mean())}
