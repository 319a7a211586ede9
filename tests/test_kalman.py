"""Tests of world_models/kalman.py against an independent dense float64 reference.

The reference builds the joint Gaussian of the stacked latents z_{1:T} directly
(mean by propagation, covariance L blockdiag(P0, Q, ..., Q) L^T with L the block
lower-triangular matrix of powers of A), appends x = C z + v for the observed
steps only, and conditions densely. None of kalman.py's functions are used in it.
"""
from __future__ import annotations

import pytest
import torch

from world_models.kalman import (
    LGParams,
    forward_conditionals,
    kalman_filter,
    posterior_precision_diagonal,
    rts_smoother,
)

DT = torch.float64
RTOL, ATOL = 1e-8, 1e-10


# ----------------------------------------------------------------------------- random problems

def _spd(n: int, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    M = torch.randn(n, n, generator=g, dtype=DT)
    return scale * (M @ M.T) / n + 0.1 * torch.eye(n, dtype=DT)


def _ill_conditioned(n: int, g: torch.Generator, condition: float = 1e4) -> torch.Tensor:
    """U diag(eigenvalues from 10^-2 to 10^-2 condition) U^T, U a random rotation: condition number `condition`."""
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    eig = 1e-2 * torch.logspace(0, torch.log10(torch.tensor(condition)).item(), n, dtype=DT)
    return U @ torch.diag(eig) @ U.T


def make_problem(seed: int, Dz: int, Dx: int, Da: int, T: int, Bsz: int,
                 missing: str, sampled_obs: bool, ill: bool = False):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(Dz, Dz, generator=g, dtype=DT)
    rho = max(torch.linalg.eigvals(A).abs().max().item(), 1e-6)
    radius = 0.3 + 0.65 * torch.rand(1, generator=g, dtype=DT).item()      # spectral radius in [0.3, 0.95)
    A = A * (radius / rho)
    p = LGParams(
        A=A,
        B=torch.randn(Dz, Da, generator=g, dtype=DT),
        C=torch.randn(Dx, Dz, generator=g, dtype=DT),
        Q=_spd(Dz, g, 0.5),
        R=_spd(Dx, g, 0.5),
        m0=torch.randn(Dz, generator=g, dtype=DT),
        P0=_spd(Dz, g, 1.0),
    )
    if ill:   # transition and observation noise with condition number 1e4
        p = LGParams(A=p.A, B=p.B, C=p.C, Q=_ill_conditioned(Dz, g), R=_ill_conditioned(Dx, g), m0=p.m0, P0=p.P0)
    actions = torch.randn(Bsz, T, Da, generator=g, dtype=DT)

    if sampled_obs:  # draw from the model
        obs = torch.empty(Bsz, T, Dx, dtype=DT)
        Lq, Lr, L0 = (torch.linalg.cholesky(M) for M in (p.Q, p.R, p.P0))
        z = p.m0 + torch.randn(Bsz, Dz, generator=g, dtype=DT) @ L0.T
        for t in range(T):
            if t > 0:
                z = z @ p.A.T + actions[:, t] @ p.B.T + torch.randn(Bsz, Dz, generator=g, dtype=DT) @ Lq.T
            obs[:, t] = z @ p.C.T + torch.randn(Bsz, Dx, generator=g, dtype=DT) @ Lr.T
    else:
        obs = 2.0 * torch.randn(Bsz, T, Dx, generator=g, dtype=DT)

    if missing == "none":
        mask = torch.ones(Bsz, T, dtype=torch.bool)
    elif missing == "first":   # the first step missing in every sequence, the rest at random
        mask = torch.rand(Bsz, T, generator=g) < 0.8
        mask[:, 0] = False
    else:
        mask = torch.rand(Bsz, T, generator=g) < 0.6
        # sequence 0: all but one step missing
        keep = int(torch.randint(T, (1,), generator=g).item())
        mask[0] = False
        mask[0, keep] = True
        if missing == "with_empty" and Bsz > 1:
            mask[1] = False  # sequence 1: nothing observed at all
    return p, obs, actions, mask


# ----------------------------------------------------------------------------- dense reference

def dense_prior(p: LGParams, actions_b: torch.Tensor, T: int):
    """Mean (T*Dz,) and covariance (T*Dz, T*Dz) of stacked z_{1:T} for one sequence."""
    Dz = p.A.shape[0]
    mus = [p.m0]
    for t in range(1, T):
        mus.append(p.A @ mus[-1] + p.B @ actions_b[t])
    mu = torch.cat(mus)
    powers = [torch.eye(Dz, dtype=DT)]
    for _ in range(T - 1):
        powers.append(p.A @ powers[-1])
    L = torch.zeros(T * Dz, T * Dz, dtype=DT)
    for t in range(T):
        for s in range(t + 1):
            L[t * Dz:(t + 1) * Dz, s * Dz:(s + 1) * Dz] = powers[t - s]
    D = torch.block_diag(p.P0, *([p.Q] * (T - 1)))
    return mu, L @ D @ L.T


def dense_reference(p: LGParams, obs_b, actions_b, mask_b):
    """Dense joint of (z, x_obs) for one sequence; returns prior and posterior of z and the
    marginal of the stacked observed x."""
    T = obs_b.shape[0]
    Dz, Dx = p.A.shape[0], p.C.shape[0]
    mu, Sig = dense_prior(p, actions_b, T)
    idx = [t for t in range(T) if bool(mask_b[t])]
    H = torch.zeros(len(idx) * Dx, T * Dz, dtype=DT)
    for k, t in enumerate(idx):
        H[k * Dx:(k + 1) * Dx, t * Dz:(t + 1) * Dz] = p.C
    x = obs_b[idx].reshape(-1)
    x_mean = H @ mu
    x_cov = H @ Sig @ H.T + torch.block_diag(*([p.R] * len(idx))) if idx else H @ Sig @ H.T
    if idx:
        cross = Sig @ H.T                                   # Cov[z, x]
        gain = torch.linalg.solve(x_cov, cross.T).T         # Cov[z, x] Cov[x]^{-1}
        post_mean = mu + gain @ (x - x_mean)
        post_cov = Sig - gain @ cross.T
    else:
        post_mean, post_cov = mu.clone(), Sig.clone()
    post_cov = 0.5 * (post_cov + post_cov.T)
    return dict(x=x, x_mean=x_mean, x_cov=x_cov, post_mean=post_mean, post_cov=post_cov)


def dense_loglik(ref) -> torch.Tensor:
    if ref["x"].numel() == 0:
        return torch.zeros((), dtype=DT)
    return torch.distributions.MultivariateNormal(ref["x_mean"], ref["x_cov"]).log_prob(ref["x"])


def blk(M: torch.Tensor, t: int, s: int, D: int) -> torch.Tensor:
    return M[t * D:(t + 1) * D, s * D:(s + 1) * D]


# ----------------------------------------------------------------------------- cases

CASES = [
    # seed, Dz, Dx, Da, T, Bsz, missing, sampled_obs
    (0, 1, 1, 1, 1, 3, "none", True),
    (1, 3, 2, 1, 1, 3, "some", False),
    (2, 2, 3, 2, 7, 3, "none", True),
    (3, 4, 2, 1, 12, 4, "some", True),
    (4, 5, 5, 2, 20, 3, "some", False),
    (5, 1, 4, 2, 15, 3, "with_empty", True),
    (6, 5, 1, 1, 20, 4, "with_empty", True),
    (7, 3, 3, 2, 2, 3, "some", False),
    (8, 2, 5, 1, 20, 2, "none", False),
    (9, 4, 4, 2, 9, 3, "with_empty", False),
    # ill-conditioned noise (condition number 1e4) and a fully missing first step
    (10, 3, 3, 1, 10, 3, "first", True, True),
    (11, 4, 2, 2, 8, 3, "first", False, True),
    (12, 2, 4, 1, 12, 2, "none", True, True),
]
IDS = [f"s{c[0]}-Dz{c[1]}-Dx{c[2]}-Da{c[3]}-T{c[4]}-{c[6]}-{'samp' if c[7] else 'rand'}"
       + ("-ill" if len(c) > 8 and c[8] else "") for c in CASES]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def case(request):
    p, obs, actions, mask = make_problem(*request.param)
    filt = kalman_filter(p, obs, actions, mask)
    sm = rts_smoother(p, filt)
    refs = [dense_reference(p, obs[b], actions[b], mask[b]) for b in range(obs.shape[0])]
    return dict(p=p, obs=obs, actions=actions, mask=mask, filt=filt, sm=sm, refs=refs)


def close(a, b, rtol=RTOL, atol=ATOL):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- tests

def test_shapes_and_missing_zero(case):
    filt, sm, mask = case["filt"], case["sm"], case["mask"]
    Bsz, T, _ = case["obs"].shape
    Dz = case["p"].A.shape[0]
    assert filt.log_lik.shape == (Bsz, T) and filt.log_lik.dtype == DT
    assert sm.mean.shape == (Bsz, T, Dz) and sm.cov.shape == (Bsz, T, Dz, Dz)
    assert sm.cross_cov.shape == (Bsz, T - 1, Dz, Dz)
    assert torch.all(filt.log_lik[~mask] == 0)


def test_log_likelihood(case):
    for b, ref in enumerate(case["refs"]):
        got = case["filt"].log_lik[b].sum()
        want = dense_loglik(ref)
        close(got, want, rtol=1e-8, atol=1e-12)


def test_smoothed_marginals_and_cross_cov(case):
    sm, Dz = case["sm"], case["p"].A.shape[0]
    T = case["obs"].shape[1]
    for b, ref in enumerate(case["refs"]):
        close(sm.mean[b], ref["post_mean"].reshape(T, Dz))
        for t in range(T):
            close(sm.cov[b, t], blk(ref["post_cov"], t, t, Dz))
        for t in range(T - 1):
            close(sm.cross_cov[b, t], blk(ref["post_cov"], t, t + 1, Dz))   # Cov[z_t, z_{t+1} | x]


def test_posterior_precision_diagonal(case):
    Dz, T = case["p"].A.shape[0], case["obs"].shape[1]
    lam = posterior_precision_diagonal(case["p"], case["mask"])
    assert lam.shape == (case["obs"].shape[0], T, Dz, Dz)
    for b, ref in enumerate(case["refs"]):
        prec = torch.linalg.inv(ref["post_cov"])
        for t in range(T):
            want = blk(prec, t, t, Dz)
            # inverse of a dense covariance: compare relative to the block's scale
            close(lam[b, t], want, rtol=1e-7, atol=1e-9 * want.abs().max().item())


def test_forward_conditionals(case):
    Dz, T = case["p"].A.shape[0], case["obs"].shape[1]
    G, cond = forward_conditionals(case["sm"])
    Bsz = case["obs"].shape[0]
    assert G.shape == (Bsz, T - 1, Dz, Dz) and cond.shape == (Bsz, T, Dz, Dz)
    for b, ref in enumerate(case["refs"]):
        S = ref["post_cov"]
        close(cond[b, 0], blk(S, 0, 0, Dz))
        for t in range(T - 1):
            # condition z_{t+1} on the whole past z_{1:t} given x; the posterior is Markov, so
            # the coefficients on z_{1:t-1} must vanish and the one on z_t is G_t.
            past = slice(0, (t + 1) * Dz)
            nxt = slice((t + 1) * Dz, (t + 2) * Dz)
            S_pp, S_np, S_nn = S[past, past], S[nxt, past], S[nxt, nxt]
            coef = torch.linalg.solve(S_pp, S_np.T).T           # (Dz, (t+1)Dz)
            ccov = S_nn - coef @ S_np.T
            scale = coef.abs().max().item()
            close(coef[:, :t * Dz], torch.zeros_like(coef[:, :t * Dz]), rtol=0, atol=1e-8 * max(scale, 1.0))
            close(G[b, t], coef[:, t * Dz:], rtol=1e-7, atol=1e-9 * max(scale, 1.0))
            close(cond[b, t + 1], 0.5 * (ccov + ccov.T), rtol=1e-7, atol=1e-10)


def test_float32_params_are_promoted():
    p, obs, actions, mask = make_problem(11, 3, 2, 1, 6, 2, "some", True)
    p32 = LGParams(*(x.float() for x in p))
    f64 = kalman_filter(p, obs, actions, mask)
    f32 = kalman_filter(p32, obs.float(), actions.float(), mask)
    assert f32.log_lik.dtype == DT
    # only the inputs were rounded; results agree to float32 input precision
    close(f32.log_lik, f64.log_lik, rtol=1e-4, atol=1e-4)
