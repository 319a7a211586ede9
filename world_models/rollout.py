"""Run a model forward with latents drawn from a posterior, recording every log-density term.

One rollout draws z_t ~ q(z_t | ctx_t, h_t, z_{t-1}) in time order, feeding each sample back
into the model state, so it serves structured posteriors (PlaNet's q(z_t | h_t, x_t), whose h_t
depends on sampled z_{<t}) and mean-field ones alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from .base import ModelState, SequenceBatch, SequenceModel, as_mvn, diag_normal, gaussian_kl, masked_log_prob
from .fused_filter import fused_filter, supported


@dataclass
class Rollout:
    """Per-step terms, each (N, T) with N = n_samples * B (sample-major), except h, z, q_mean, q_std."""

    h: torch.Tensor            # (N, T, H)
    z: torch.Tensor            # (N, T, Dz)
    log_lik: torch.Tensor      # log p(x_t | h_t, z_t), 0 where x_t is missing
    log_prior: torch.Tensor    # log p(z_t | s_{t-1}, a_{t-1})
    log_q: torch.Tensor        # log q(z_t | ...)
    kl: torch.Tensor           # KL(q(z_t | .) || p(z_t | .)) in closed form, given the sampled past
    q_mean: torch.Tensor       # (N, T, Dz) parameters of the posterior at each step
    q_std: torch.Tensor
    reward_log_lik: Optional[torch.Tensor] = None

    @property
    def log_weight(self) -> torch.Tensor:
        """log p(x_t, z_t | .) - log q(z_t | .) per step: summed over t it is one importance weight."""
        return self.log_lik + self.log_prior - self.log_q

    @property
    def elbo(self) -> torch.Tensor:
        """Per-step ELBO with the KL in closed form: log p(x_t | .) - KL_t (same expectation as log_weight)."""
        return self.log_lik - self.kl


def rollout(model: SequenceModel, posterior, batch: SequenceBatch, ctx: Optional[torch.Tensor] = None,
            n_samples: int = 1, batched_prior: Optional[bool] = None, fused: Optional[bool] = None,
            noise: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None) -> Rollout:
    """Sample n_samples latent trajectories per sequence from the posterior given its context ctx (B, T, C).
    posterior=None samples from the model's prior (q = p(z_t | s_{t-1}, a_{t-1}), KL = 0).
    batched_prior (default: when the model has prior_from_h and there is a posterior) evaluates the priors
    and all log-densities after the time loop in one call each; the values are the same as step by step
    (tests/test_posteriors.py), and the training step is faster (benchmarks/bench_inference.py).
    fused (default: where supported) takes a fast path that draws all noise at once: for the RSSM with an
    amortized head (with or without semi-amortized offsets), the time loop as one operation with a
    hand-written backward (fused_filter.py); for mean-field posteriors (per-sequence lambda), all z at
    once and then the model's deterministic path in one call (RSSM.deter_path); see fast_loop. noise
    (T, N, Dz), standard normal draws used instead of fresh ones (batched_prior and fused rollouts), makes
    the two paths comparable sample by sample. z (N, T, Dz), given latents: the rollout then evaluates every
    term at them instead of drawing (h_t follows the given z_{<t}), e.g. for annealed importance sampling (ais.py);
    of the fast paths the mean-field ones, the Markov-Gaussian one and, on the RSSM with an amortized head, the
    given-latents one (fast_loop) take them."""
    model.check_batch(batch)
    rep = batch.repeat(n_samples) if n_samples > 1 else batch
    if ctx is not None and n_samples > 1:
        ctx = ctx.repeat(n_samples, 1, 1)
    if batched_prior is None:
        batched_prior = model.prior_from_h and posterior is not None
    state = model.start_state(rep)
    loop = None
    if posterior is not None and fused is not False:
        loop = ssm_loop(posterior, ctx, z) if not model.deter_dim else (
            fast_loop(model, posterior, ctx, z) if batched_prior else None)
    if fused and loop is None:
        raise ValueError(f"no fused loop for {type(model).__name__} with posterior "
                         f"{getattr(posterior, 'name', None)!r}; fused needs the RSSM with an amortized head or "
                         f"a mean-field posterior, or a model without h_t with a mean-field or Markov-Gaussian one")
    if loop is not None:
        if noise is None and z is None:       # given latents need no draws
            noise = torch.randn(rep.length, rep.batch_size, model.z_dim, dtype=ctx.dtype, device=ctx.device)
        if not model.deter_dim:
            return _markov_terms(model, rep, state, *loop(state, noise))
        return _batched_terms(model, rep, *loop(rep.actions.to(ctx.dtype), state, noise))
    if noise is not None and (not batched_prior or z is not None):
        raise ValueError("noise can be given to batched_prior or fused rollouts only, and not with given z")
    hs, zs, lp, lq, kls, qm, qs = [], [], [], [], [], [], []
    for t in range(rep.length):
        if batched_prior:     # only what the next step needs: h_t, then z_t ~ q(z_t | ., h_t)
            h = model.next_h(state, rep.actions[:, t], rep.t0 + t)
            q = posterior.step(ctx[:, t], h, state.z)
            if t == 0 and not (isinstance(q, Independent) and isinstance(q.base_dist, Normal)):
                raise ValueError(f"batched_prior needs a diagonal Gaussian posterior, got {type(q).__name__}")
        else:
            h, prior = model.prior_step(state, rep.actions[:, t], rep.t0 + t)
            q = prior if posterior is None else posterior.step(ctx[:, t], h, state.z)
        if z is None:
            z_t = q.rsample() if noise is None else q.mean + q.stddev * noise[t]
        else:
            z_t = z[:, t]
        hs.append(h); zs.append(z_t); qm.append(q.mean); qs.append(q.stddev)
        if not batched_prior:
            lp.append(prior.log_prob(z_t)); lq.append(q.log_prob(z_t)); kls.append(gaussian_kl(q, prior))
        state = ModelState(h, z_t)
    stack = lambda xs: torch.stack(xs, 1)
    H, Z, QM, QS = stack(hs), stack(zs), stack(qm), stack(qs)
    if batched_prior:
        return _batched_terms(model, rep, H, Z, QM, QS)
    return _terms(model, rep, H, Z, QM, QS, stack(lp), stack(lq), stack(kls))


def fast_loop(model: SequenceModel, posterior, ctx: torch.Tensor, z: Optional[torch.Tensor] = None):
    """The RSSM's fast time loop for this posterior, (actions, start state, noise (T, N, Dz)) -> (H, Z, QM, QS),
    or None where there is none: the fused filtering loop with an amortized head (fused_filter.py); with given
    latents z (AIS) and an amortized head, the model's deterministic path in one call and then the head on every
    step in one call (AIS at the study's sizes: 1.04-1.16x faster than the plain loop on 16 windows, 1.27-1.34x
    on BDMC's 4; benchmarks/bench_ais.py, docs/performance.md); or for mean-field posteriors all z at once and
    then the model's deterministic path."""
    head = posterior.mlp_head(ctx)
    if supported(model, head) and z is None:
        return lambda actions, state, noise: fused_filter(model, head, actions, state, noise)
    if head is not None and z is not None and hasattr(model, "deter_path"):
        def given(actions, state, noise):   # h_t follows the given z_{<t} alone, then q(z_t | h_t, ctx_t) of all t at once
            H = model.deter_path(state.h, torch.cat([state.z[:, None], z[:, :-1]], 1), actions)
            return (H, z, *head(H))
        return given
    mean_field = posterior.mean_field(ctx) if hasattr(model, "deter_path") else None
    if mean_field is None:
        return None
    QM, QS = mean_field

    def loop(actions, state, noise):   # z_t = mu_t + sigma_t eps_t for all t at once, then h_t given z_{<t}
        Z = torch.addcmul(QM, QS, noise.transpose(0, 1)) if z is None else z
        return model.deter_path(state.h, torch.cat([state.z[:, None], Z[:, :-1]], 1), actions), Z, QM, QS
    return loop


def ssm_loop(posterior, ctx: torch.Tensor, z: Optional[torch.Tensor] = None):
    """For models without h_t: (start state, noise (T, N, Dz)) -> (Z (N, T, Dz), q(z_t | z_{t-1}, .) of every step as
    one distribution over (N, T, Dz)), or None. Mean-field posteriors draw all z at once; Markov-Gaussian ones,
    z_t = A_t z_{t-1} + b_t + L_t eps_t, in a loop of small matrix products, and q is evaluated afterwards."""
    mean_field = posterior.mean_field(ctx)
    if mean_field is not None:
        QM, QS = mean_field
        return lambda state, noise: (torch.addcmul(QM, QS, noise.transpose(0, 1)) if z is None else z,
                                     diag_normal(QM, QS))
    markov = posterior.markov_gaussian(ctx)
    if markov is None:
        return None
    b, A, L = markov
    mv = lambda M, v: (M @ v.unsqueeze(-1)).squeeze(-1)

    def loop(state, noise):
        Z, prev = z, state.z
        if Z is None:
            zs = []
            for t in range(b.shape[1]):
                prev = mv(A[:, t], prev) + b[:, t] + mv(L[:, t], noise[t])
                zs.append(prev)
            Z = torch.stack(zs, 1)
        Z_prev = torch.cat([state.z[:, None], Z[:, :-1]], 1)
        return Z, MultivariateNormal(mv(A, Z_prev) + b, scale_tril=L)
    return loop


def _markov_terms(model: SequenceModel, rep: SequenceBatch, state: ModelState, Z: torch.Tensor,
                  q: Distribution) -> Rollout:
    """Models without h_t, p(z_t | z_{t-1}, a_t): the first step's prior from the start state, every later step's in
    one call with (sequence, step) flattened, at time index t0 + 1 for all: prior_step may tell the first step
    (t == 0) from the others, not one later step from another (SequenceModel.prior_step); log q(z_t | .) and the
    closed-form KL of all steps at once."""
    N, T, _ = Z.shape
    H = Z.new_zeros(N, T, 0)
    parts = [model.prior_step(state, rep.actions[:, 0].to(Z.dtype), rep.t0)[1]]
    if T > 1:
        flat = lambda x: x[:, 1:].reshape(N * (T - 1), *x.shape[2:])
        parts.append(model.prior_step(ModelState(H[:, 0].repeat(T - 1, 1), Z[:, :-1].reshape(N * (T - 1), -1)),
                                      flat(rep.actions).to(Z.dtype), rep.t0 + 1)[1])
    prior = along_time(parts, N)
    return _terms(model, rep, H, Z, q.mean, q.stddev, prior.log_prob(Z), q.log_prob(Z), gaussian_kl(q, prior))


def along_time(parts: list[Distribution], N: int) -> Distribution:
    """One Gaussian over (N, T, Dz) from per-step Gaussians over (N k, Dz) in time order (k steps each, sequence
    major): diagonal if all are, else full-covariance."""
    Dz = parts[0].mean.shape[-1]
    if all(isinstance(d, Independent) and isinstance(d.base_dist, Normal) for d in parts):
        return diag_normal(*(torch.cat([getattr(d, k).reshape(N, -1, Dz) for d in parts], 1) for k in ("mean", "stddev")))
    mvns = [as_mvn(d) for d in parts]
    loc = torch.cat([d.mean.reshape(N, -1, Dz) for d in mvns], 1)
    tril = torch.cat([d.scale_tril.expand(*d.batch_shape, Dz, Dz).reshape(N, -1, Dz, Dz) for d in mvns], 1)
    return MultivariateNormal(loc, scale_tril=tril)


def _batched_terms(model: SequenceModel, rep: SequenceBatch, H, Z, QM, QS) -> Rollout:
    """Every step at once: p(z_t | h_t), q(z_t | .) = N(QM_t, QS_t^2) (diagonal)."""
    prior, q = model.prior(H), diag_normal(QM, QS)
    return _terms(model, rep, H, Z, QM, QS, prior.log_prob(Z), q.log_prob(Z), gaussian_kl(q, prior))


def _terms(model: SequenceModel, rep: SequenceBatch, H, Z, QM, QS, log_prior, log_q, kl) -> Rollout:
    log_lik = masked_log_prob(model.emission(H, Z), rep.obs, rep.mask)
    reward_ll = None
    if model.has_reward and rep.rewards is not None:
        reward_ll = model.reward(H, Z).log_prob(rep.rewards)
    return Rollout(H, Z, log_lik, log_prior, log_q, kl, QM, QS, reward_ll)


def per_sample(x: torch.Tensor, n_samples: int) -> torch.Tensor:
    """(n_samples * B, ...) -> (n_samples, B, ...)."""
    return x.reshape(n_samples, -1, *x.shape[1:])
