"""Estimators of log p(x_{1:T} | a) in nats, per sequence (B,). Divide by T for per-step values.

    ELBO     L[q]   = E_q[ sum_t log p(x_t | s_t) - KL(q_t || p_t) ]          (closed-form KL per step)
    IWAE-K          = E[ log (1/K) sum_k w_k ],  w = p(x, z) / q(z)
    SMC-N           = E[ log Z_hat ],  particle filter with proposal q (or the prior: bootstrap),
                      resampling (systematic) when ESS < threshold * N
    exact           = Kalman filter (linear-Gaussian models only)
In expectation: L[q] <= IWAE-K <= IWAE-2K <= log p(x) and SMC-N <= log p(x).
Large sample counts run in chunks of `chunk` samples to bound memory.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .base import ModelState, SequenceBatch, SequenceModel, masked_log_prob
from .rollout import per_sample, rollout

ESTIMATORS = ("elbo", "iwae", "smc", "exact")


def _context(model, posterior, batch, ctx):
    if posterior is None or ctx is not None:
        return ctx
    return posterior.context(model, batch)


def _chunks(n: int, chunk: int):
    while n > 0:
        yield min(n, chunk)
        n -= chunk


@torch.no_grad()
def elbo(model: SequenceModel, posterior, batch: SequenceBatch, n_samples: int = 1,
         ctx: Optional[torch.Tensor] = None, chunk: int = 256, kl: str = "analytic") -> torch.Tensor:
    """kl='analytic': sum_t log p(x_t|.) - KL_t (lower variance for mean-field q);
    kl='sample': sum_t log p(x_t, z_t|.) - log q(z_t|.) (zero variance at the exact posterior)."""
    if kl not in ("analytic", "sample"):
        raise ValueError(f"unknown kl estimate {kl!r}; valid choices: analytic, sample")
    ctx = _context(model, posterior, batch, ctx)
    total = 0.0
    for n in _chunks(n_samples, chunk):
        ro = rollout(model, posterior, batch, ctx, n)
        terms = ro.elbo if kl == "analytic" else ro.log_weight
        total = total + per_sample(terms.sum(1), n).sum(0)
    return total / n_samples


@torch.no_grad()
def iwae(model: SequenceModel, posterior, batch: SequenceBatch, k: int, ctx: Optional[torch.Tensor] = None,
         chunk: int = 256) -> torch.Tensor:
    ctx = _context(model, posterior, batch, ctx)
    lse = []
    for n in _chunks(k, chunk):
        ro = rollout(model, posterior, batch, ctx, n)
        lse.append(torch.logsumexp(per_sample(ro.log_weight.sum(1), n), 0))
    return torch.logsumexp(torch.stack(lse), 0) - math.log(k)


def systematic_resample(log_w: torch.Tensor) -> torch.Tensor:
    """Ancestor indices (N, B) for normalized weights along dim 0, one uniform offset per column."""
    N, B = log_w.shape
    w = torch.softmax(log_w, 0)
    cdf = w.cumsum(0)
    cdf[-1] = 1.0
    u = (torch.rand(1, B, dtype=w.dtype) + torch.arange(N, dtype=w.dtype)[:, None]) / N
    return torch.searchsorted(cdf.T.contiguous(), u.T.contiguous()).T.clamp(max=N - 1)


@torch.no_grad()
def smc(model: SequenceModel, posterior, batch: SequenceBatch, n_particles: int,
        ctx: Optional[torch.Tensor] = None, ess_threshold: float = 0.5) -> torch.Tensor:
    """log Z_hat = sum_t log sum_i W_{t-1}^i w_t^i,  w_t = p(x_t|s_t) p(z_t|s_{t-1}) / q(z_t|.)."""
    ctx = _context(model, posterior, batch, ctx)
    N, B = n_particles, batch.batch_size
    rep = batch.repeat(N)
    ctx = ctx.repeat(N, 1, 1) if ctx is not None else None
    state = model.start_state(rep)
    log_w = rep.obs.new_zeros(N, B, dtype=torch.float64)
    log_z = rep.obs.new_zeros(B, dtype=torch.float64)
    cols = torch.arange(B)
    for t in range(batch.length):
        h, prior = model.prior_step(state, rep.actions[:, t], rep.t0 + t)
        q = prior if posterior is None else posterior.step(ctx[:, t], h, state.z)
        z = q.sample()
        inc = masked_log_prob(model.emission(h, z), rep.obs[:, t], rep.mask[:, t]) + prior.log_prob(z) - q.log_prob(z)
        new = log_w + inc.double().view(N, B)
        log_z += torch.logsumexp(new, 0) - torch.logsumexp(log_w, 0)
        log_w = new
        state = ModelState(h, z)
        ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
        low = ess < ess_threshold * N
        if low.any() and t < batch.length - 1:
            anc = torch.where(low, systematic_resample(log_w), torch.arange(N)[:, None])   # (N, B)
            flat = (anc * B + cols).reshape(-1)                                             # sample-major rows
            state = ModelState(state.h[flat], state.z[flat])
            log_w = torch.where(low, torch.logsumexp(log_w, 0) - math.log(N), log_w)
    return log_z


@torch.no_grad()
def exact_log_marginal(model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
    """log p(x) by the Kalman filter (float64); only for models that have `log_marginal`."""
    if not hasattr(model, "log_marginal"):
        raise TypeError(f"exact log p(x) needs a linear-Gaussian model, got {type(model).__name__}; "
                        f"use one of: elbo, iwae, smc")
    return model.log_marginal(batch).sum(1)
