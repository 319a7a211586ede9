"""Exact inference in the linear-Gaussian SSM, functional and batched over sequences.

    z_1 ~ N(m0, P0);  z_t = A z_{t-1} + B a_{t-1} + w,  w ~ N(0, Q)
    x_t = C z_t + v,  v ~ N(0, R)      (x_t skipped where mask[:, t] is False)

Computed in float64 whatever the dtype of the parameters. Shapes: obs (B,T,Dx),
actions (B,T,Da) with actions[:, t] = a_{t-1}, mask (B,T) bool.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch


class LGParams(NamedTuple):
    A: torch.Tensor   # (Dz, Dz)
    B: torch.Tensor   # (Dz, Da)
    C: torch.Tensor   # (Dx, Dz)
    Q: torch.Tensor   # (Dz, Dz) transition noise covariance
    R: torch.Tensor   # (Dx, Dx) observation noise covariance
    m0: torch.Tensor  # (Dz,)
    P0: torch.Tensor  # (Dz, Dz)

    def double(self) -> "LGParams":
        return LGParams(*(p.double() for p in self))


class FilterResult(NamedTuple):
    pred_mean: torch.Tensor  # E[z_t | x_{<t}]          (B, T, Dz)
    pred_cov: torch.Tensor   # Cov[z_t | x_{<t}]        (B, T, Dz, Dz)
    filt_mean: torch.Tensor  # E[z_t | x_{<=t}]
    filt_cov: torch.Tensor
    log_lik: torch.Tensor    # log p(x_t | x_{<t}), 0 where missing   (B, T)


class SmootherResult(NamedTuple):
    mean: torch.Tensor       # E[z_t | x_{1:T}]         (B, T, Dz)
    cov: torch.Tensor        # Cov[z_t | x_{1:T}]       (B, T, Dz, Dz)
    cross_cov: torch.Tensor  # Cov[z_t, z_{t+1} | x]    (B, T-1, Dz, Dz)


def _sym(P: torch.Tensor) -> torch.Tensor:
    return 0.5 * (P + P.transpose(-1, -2))


def kalman_filter(p: LGParams, obs: torch.Tensor, actions: torch.Tensor,
                  mask: Optional[torch.Tensor] = None) -> FilterResult:
    p = p.double()
    obs, actions = obs.double(), actions.double()
    Bsz, T, Dx = obs.shape
    Dz = p.A.shape[0]
    if mask is None:
        mask = torch.ones(Bsz, T, dtype=torch.bool, device=obs.device)
    eye = torch.eye(Dz, dtype=torch.float64, device=obs.device)
    m = p.m0.expand(Bsz, Dz)
    P = p.P0.expand(Bsz, Dz, Dz)
    out = {k: [] for k in FilterResult._fields}
    for t in range(T):
        if t > 0:  # predict: m = A m + B a_{t-1};  P = A P A^T + Q
            m = m @ p.A.T + actions[:, t] @ p.B.T
            P = _sym(p.A @ P @ p.A.T + p.Q)
        out["pred_mean"].append(m)
        out["pred_cov"].append(P)
        # update: S = C P C^T + R;  K = P C^T S^{-1};  log p(x_t | x_{<t}) = log N(x_t; C m, S)
        S = _sym(p.C @ P @ p.C.T + p.R)
        L = torch.linalg.cholesky(S)
        resid = obs[:, t] - m @ p.C.T
        white = torch.linalg.solve_triangular(L, resid.unsqueeze(-1), upper=False).squeeze(-1)
        ll = -0.5 * (Dx * math.log(2 * math.pi) + white.pow(2).sum(-1)) - torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1)
        K = torch.cholesky_solve(p.C @ P, L).transpose(-1, -2)             # (B, Dz, Dx)
        IKC = eye - K @ p.C
        m_upd = m + (K @ resid.unsqueeze(-1)).squeeze(-1)
        P_upd = _sym(IKC @ P @ IKC.transpose(-1, -2) + K @ p.R @ K.transpose(-1, -2))  # Joseph form
        obs_t = mask[:, t]
        m = torch.where(obs_t[:, None], m_upd, m)
        P = torch.where(obs_t[:, None, None], P_upd, P)
        out["filt_mean"].append(m)
        out["filt_cov"].append(P)
        out["log_lik"].append(torch.where(obs_t, ll, torch.zeros_like(ll)))
    return FilterResult(*(torch.stack(out[k], 1) for k in FilterResult._fields))


def rts_smoother(p: LGParams, filt: FilterResult) -> SmootherResult:
    """Rauch-Tung-Striebel: J_t = P_t|t A^T P_{t+1|t}^{-1};
    m_t|T = m_t|t + J_t (m_{t+1|T} - m_{t+1|t});  P_t|T = P_t|t + J_t (P_{t+1|T} - P_{t+1|t}) J_t^T."""
    p = p.double()
    T = filt.filt_mean.shape[1]
    means, covs, cross = [filt.filt_mean[:, -1]], [filt.filt_cov[:, -1]], []
    for t in range(T - 2, -1, -1):
        Pf, Pp = filt.filt_cov[:, t], filt.pred_cov[:, t + 1]
        J = torch.linalg.solve(Pp, p.A @ Pf).transpose(-1, -2)   # P_f A^T P_p^{-1} (P_p symmetric)
        m = filt.filt_mean[:, t] + (J @ (means[0] - filt.pred_mean[:, t + 1]).unsqueeze(-1)).squeeze(-1)
        cross.insert(0, J @ covs[0])                               # Cov[z_t, z_{t+1} | x] = J_t P_{t+1|T}
        covs.insert(0, _sym(Pf + J @ (covs[0] - Pp) @ J.transpose(-1, -2)))
        means.insert(0, m)
    Bsz, Dz = filt.filt_mean.shape[0], filt.filt_mean.shape[-1]
    cross_t = torch.stack(cross, 1) if cross else filt.filt_cov.new_zeros(Bsz, 0, Dz, Dz)
    return SmootherResult(torch.stack(means, 1), torch.stack(covs, 1), cross_t)


def forward_conditionals(sm: SmootherResult):
    """The exact posterior as a forward Markov chain, for sampling z_1, z_2, ... in time order:
    p(z_{t+1} | z_t, x) = N(m_{t+1} + G_t (z_t - m_t), P_{t+1} - G_t Cov[z_t, z_{t+1}]),
    G_t = Cov[z_{t+1}, z_t] P_t^{-1}. Returns gains G (B,T-1,Dz,Dz) and conditional covariances
    (B,T,Dz,Dz), whose first entry is the marginal P_1|T."""
    Pt = sm.cov[:, :-1]
    G = torch.linalg.solve(Pt, sm.cross_cov).transpose(-1, -2)   # Cov[z_{t+1}, z_t] P_t^{-1}
    cond = _sym(sm.cov[:, 1:] - G @ sm.cross_cov)
    return G, torch.cat([sm.cov[:, :1], cond], 1)


def posterior_precision_diagonal(p: LGParams, mask: torch.Tensor) -> torch.Tensor:
    """Diagonal blocks of the precision of p(z_{1:T} | x) (block tridiagonal), (B, T, Dz, Dz):
    Lambda_tt = [t=1] P0^{-1} + [t>1] Q^{-1} + [t<T] A^T Q^{-1} A + [x_t observed] C^T R^{-1} C.
    The mean-field optimum has variances 1 / diag(Lambda_tt) and the smoothed means."""
    p = p.double()
    Bsz, T = mask.shape
    Qi, Ri, P0i = (torch.linalg.inv(M) for M in (p.Q, p.R, p.P0))
    AQA, CRC = p.A.T @ Qi @ p.A, p.C.T @ Ri @ p.C
    t = torch.arange(T, device=mask.device)
    first, last = (t == 0).double()[:, None, None], (t == T - 1).double()[:, None, None]
    prior = first * P0i + (1 - first) * Qi + (1 - last) * AQA                  # (T, Dz, Dz)
    return prior + mask.double()[..., None, None] * CRC


def mean_field_elbo(p: LGParams, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor,
                    mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Closed-form ELBO (B,) of q(z) = prod_t N(z_t; mean_t, diag var_t):
    E_q[log N(z_t; A z_{t-1} + B a, Q)] = log N(m_t; A m_{t-1} + B a, Q) - tr(Q^{-1}(V_t + A V_{t-1} A^T)) / 2,
    E_q[log N(x_t; C z_t, R)] = log N(x_t; C m_t, R) - tr(R^{-1} C V_t C^T) / 2, entropy sum_t,i log(2 pi e v) / 2."""
    from torch.distributions import MultivariateNormal
    p = p.double()
    obs, actions, mean, var = obs.double(), actions.double(), mean.double(), var.double()
    V = torch.diag_embed(var)
    tr = lambda M, S: (torch.linalg.inv(M) * S).sum((-1, -2))   # tr(M^{-1} S), S symmetric
    init = MultivariateNormal(p.m0, p.P0).log_prob(mean[:, 0]) - 0.5 * tr(p.P0, V[:, 0])
    pred = mean[:, :-1] @ p.A.T + actions[:, 1:] @ p.B.T
    trans = MultivariateNormal(pred, p.Q).log_prob(mean[:, 1:]) - 0.5 * tr(p.Q, V[:, 1:] + p.A @ V[:, :-1] @ p.A.T)
    emit = MultivariateNormal(mean @ p.C.T, p.R).log_prob(obs) - 0.5 * tr(p.R, p.C @ V @ p.C.T)
    entropy = 0.5 * torch.log(2 * math.pi * math.e * var).sum((-1, -2))
    return init + trans.sum(1) + (emit * mask.double()).sum(1) + entropy
