"""The interface every sequential latent-variable model implements.

A model defines p(x_{1:T}, z_{1:T} | a) = prod_t p(z_t | s_{t-1}, a_{t-1}) p(x_t | s_t)
with model state s_t = (h_t, z_t): h_t is a deterministic summary of the past
(the GRU state of the RSSM; an empty tensor for models without one) and z_t the
stochastic latent.

Conventions shared by models, posteriors and estimators:
- `obs` is (B, T, *obs_shape); `actions` is (B, T, A) where actions[:, t] is the
  action taken *before* obs[:, t] was seen (a_{t-1}). actions[:, 0] has no
  predecessor; models treat it as "no action yet" (the LGSSM and the nonlinear SSM
  ignore it, the RSSM feeds it to its first GRU step like any other action).
- `mask` is (B, T) bool: False where the observation is missing. Missing
  observations contribute nothing to log p(x | z) and are hidden from encoders.
- All log-densities are in nats and summed over event dimensions.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, kl_divergence

from .networks import softplus_std


@dataclass
class ModelState:
    """s_t = (h_t, z_t). h has width `model.deter_dim` (possibly 0)."""

    h: torch.Tensor
    z: torch.Tensor


@dataclass
class SequenceBatch:
    """A batch of sequences. `index` identifies stored sequences (per-sequence posteriors
    keep local parameters per stored sequence and warm-start from them). A window cut from a
    longer sequence may carry the model state before its first step (`start`, (B, ...)) and
    the time index of its first step (`t0`); by default sequences start at s_0 = 0, t = 0."""

    obs: torch.Tensor
    actions: torch.Tensor
    mask: Optional[torch.Tensor] = None
    rewards: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None
    start: Optional[ModelState] = None
    t0: int = 0
    offset: Optional[torch.Tensor] = None   # (B,) step of each stored sequence where the window starts

    def __post_init__(self):
        if self.mask is None:
            self.mask = torch.ones(self.obs.shape[:2], dtype=torch.bool, device=self.obs.device)
        if self.actions.shape[:2] != self.obs.shape[:2]:
            raise ValueError(
                f"actions have batch/time shape {tuple(self.actions.shape[:2])} but obs have "
                f"{tuple(self.obs.shape[:2])}; both must be (B, T, ...)")
        if self.mask.shape != self.obs.shape[:2]:
            raise ValueError(f"mask must be (B, T) = {tuple(self.obs.shape[:2])}, got {tuple(self.mask.shape)}")

    @property
    def batch_size(self) -> int:
        return self.obs.shape[0]

    @property
    def length(self) -> int:
        return self.obs.shape[1]

    def repeat(self, n: int) -> "SequenceBatch":
        """The batch stacked n times along the batch axis (sample-major: copy s of sequence b
        sits at s * B + b), so that n samples per sequence run as one batch."""
        rep = lambda x: None if x is None else x.repeat(n, *([1] * (x.dim() - 1)))
        start = None if self.start is None else ModelState(rep(self.start.h), rep(self.start.z))
        return SequenceBatch(rep(self.obs), rep(self.actions), rep(self.mask), rep(self.rewards), rep(self.index),
                             start, self.t0, rep(self.offset))

    def to(self, device) -> "SequenceBatch":
        move = lambda x: None if x is None else x.to(device)
        start = None if self.start is None else ModelState(move(self.start.h), move(self.start.z))
        return replace(self, obs=move(self.obs), actions=move(self.actions), mask=move(self.mask),
                       rewards=move(self.rewards), index=move(self.index), start=start, offset=move(self.offset))


class SequenceModel(nn.Module):
    """Base class of p(x, z | a). Subclasses set z_dim, action_dim, obs_shape, deter_dim
    and implement the four methods below."""

    z_dim: int
    action_dim: int
    obs_shape: tuple
    deter_dim: int = 0
    has_reward: bool = False

    def start_state(self, batch: "SequenceBatch") -> ModelState:
        """The state before the batch's first step: batch.start, or s_0 = 0."""
        return batch.start if batch.start is not None else self.initial_state(batch.batch_size)

    def initial_state(self, batch_size: int) -> ModelState:
        """s_0: zeros (the first prior_step call at t = 0 returns the initial prior p(z_1))."""
        p = next(self.parameters())
        return ModelState(p.new_zeros(batch_size, self.deter_dim), p.new_zeros(batch_size, self.z_dim))

    # Models whose prior depends on the past only through h_t, p(z_t | s_{t-1}, a_{t-1}) = p(z_t | h_t),
    # set prior_from_h and implement `next_h` and `prior`: a posterior rollout then runs only the
    # transition and the posterior in its time loop and evaluates all priors, log-densities and KLs in
    # one batched call afterwards (world_models/rollout.py).
    prior_from_h: bool = False

    def prior_step(self, state: ModelState, action: torch.Tensor, t: int) -> tuple[torch.Tensor, Distribution]:
        """From s_{t-1} and a_{t-1}: the new deterministic state h_t and the prior p(z_t | s_{t-1}, a_{t-1}). The
        transition is time-homogeneous: t may tell the first step (t == 0, the initial prior) from the others, not
        one later step from another (the rollout evaluates all later steps in one call)."""
        raise NotImplementedError

    def next_h(self, state: ModelState, action: torch.Tensor, t: int) -> torch.Tensor:
        """h_t from s_{t-1} and a_{t-1} (models with prior_from_h)."""
        raise NotImplementedError

    def prior(self, h: torch.Tensor) -> Distribution:
        """p(z_t | h_t) for h of any leading batch dimensions (models with prior_from_h)."""
        raise NotImplementedError

    def emission(self, h: torch.Tensor, z: torch.Tensor) -> Distribution:
        """p(x_t | h_t, z_t); h and z may carry any leading batch dimensions."""
        raise NotImplementedError

    def reward(self, h: torch.Tensor, z: torch.Tensor) -> Distribution:
        raise NotImplementedError(f"{type(self).__name__} has no reward head")

    def noise_summary(self) -> dict[str, float]:
        """Average learned noise variances, for comparison with the true ones on toy tasks."""
        return {}

    def check_batch(self, batch: SequenceBatch) -> None:
        """Raise a clear error when a batch does not fit the model's dimensions."""
        if tuple(batch.obs.shape[2:]) != tuple(self.obs_shape):
            raise ValueError(f"{type(self).__name__} expects observations of shape {tuple(self.obs_shape)} "
                             f"per step, got {tuple(batch.obs.shape[2:])}")
        if batch.actions.shape[-1] != self.action_dim:
            raise ValueError(f"{type(self).__name__} expects actions of size {self.action_dim}, "
                             f"got {batch.actions.shape[-1]}")


def masked_log_prob(dist: Distribution, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(x_t | .) where observed, 0 where missing (missing entries may hold anything)."""
    x = torch.where(mask.view(*mask.shape, *([1] * (x.dim() - mask.dim()))), x, dist.mean.detach())
    return dist.log_prob(x) * mask.to(x.dtype)


def gaussian_kl(q: Distribution, p: Distribution) -> torch.Tensor:
    """KL(q || p) in closed form, for diagonal and full-covariance Gaussians in any combination."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return kl_divergence(as_mvn(q), as_mvn(p))


def as_mvn(d: Distribution) -> MultivariateNormal:
    if isinstance(d, MultivariateNormal):
        return d
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal):
        return MultivariateNormal(d.base_dist.loc, scale_tril=torch.diag_embed(d.base_dist.scale))
    raise TypeError(f"not a Gaussian: {type(d).__name__}")


@dataclass
class MLPHead:
    """A posterior step written as data, for fast loops that run it themselves (fused_filter.py):
    (m, raw) = head([h_t, ctx_t]) with head = (Linear, ELU, Linear), then
    q(z_t | h_t, ctx_t) = N(m + dmu_t, diag((softplus(raw) + min_std) exp(dlog sigma_t))^2), with the offsets
    (dmu, dlog sigma) (N, T, 2 Dz) optional (semi-amortized). ctx is the head's context (N, T, C)."""

    head: nn.Sequential
    min_std: float
    ctx: torch.Tensor
    offsets: Optional[torch.Tensor] = None

    def __call__(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of q(z_t | h_t, ctx_t) by the formula above, for h (..., Dh) with ctx and offsets of the same
        leading shape: one step (N, Dh), or every step at once (N, T, Dh) where h_t does not depend on q."""
        mean, raw = self.head(torch.cat([h, self.ctx], -1)).chunk(2, -1)
        std = softplus_std(raw, self.min_std)
        return (mean, std) if self.offsets is None else with_offsets(mean, std, self.offsets)


def with_offsets(mean: torch.Tensor, std: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean + dmu, std exp(dlog sigma)): a Gaussian's (mean, std) shifted by offsets (dmu, dlog sigma) (..., 2 Dz)."""
    d_mu, d_log_std = offsets.chunk(2, -1)
    return mean + d_mu, std * d_log_std.exp()


def diag_normal(mean: torch.Tensor, std, event_dims: int = 1) -> Independent:
    """Gaussian with diagonal covariance over the last `event_dims` dimensions (std may be a float).
    No argument validation: it runs at every step of every rollout (about a third of a small
    forward pass), and the std is positive by construction (softplus + min std, or exp)."""
    return Independent(Normal(mean, std, validate_args=False), event_dims, validate_args=False)


@torch.no_grad()
def sample_sequences(model: SequenceModel, actions: torch.Tensor, generator: Optional[torch.Generator] = None):
    """Ancestral sample (z, x) from p(x, z | a) for actions (B, T, A). Returns z (B,T,Dz), x (B,T,*obs)."""
    if generator is not None:  # Distribution.sample uses the global RNG; fork it for reproducibility
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        ctx = torch.random.fork_rng()
    else:
        seed, ctx = None, torch.random.fork_rng(enabled=False)
    with ctx:
        if seed is not None:
            torch.manual_seed(seed)
        B, T = actions.shape[:2]
        state = model.initial_state(B)
        zs, xs = [], []
        for t in range(T):
            h, prior = model.prior_step(state, actions[:, t], t)
            z = prior.sample()
            xs.append(model.emission(h, z).sample())
            zs.append(z)
            state = ModelState(h, z)
        return torch.stack(zs, 1), torch.stack(xs, 1)
