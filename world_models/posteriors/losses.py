"""Training losses, kept apart from the posteriors (as Pyro keeps `Trace_ELBO` apart from the guide).

A loss is called as loss(model, posterior, batch, objective) -> (scalar to minimize, metrics) and gives one gradient
step's worth of gradient to the model's and the posterior's parameters. Every posterior carries one (`.loss`,
swappable); its default is the one it was designed with:
- ElboLoss: -ELBO with free nats at the posterior's context (amortized encoders);
- DetachedRefinementLoss (Krishnan et al. 2018): the encoder learns at its own output lambda^0 with the model held
  fixed, the model at the improved lambda^K with the posterior held fixed; two parts, one scalar;
- UnrolledRefinementLoss (Kim et al. 2018): -ELBO(lambda^K), differentiated through the K refinement steps.

A posterior whose training needs more defines its loss beside itself: LearnedUpdateLoss (iterative.py: the detached
loss plus the learned update's sum_k -ELBO(lambda^k)) and WarmStartedSviLoss (per_sequence.py: parameters kept per
stored sequence, improved by a few steps, the model learns at the result).
Objective: mean over steps of -[log p(x_t|.) + log p(r_t|.) - max(KL_t, free_nats)].
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..base import SequenceBatch, SequenceModel
from ..rollout import Rollout, rollout
from .refine import refine


@dataclass
class Objective:
    """Training objective: mean over steps of -[log p(x_t|.) + log p(r_t|.) - max(KL_t, free_nats)]."""

    free_nats: float = 0.0
    n_samples: int = 1


def objective_terms(ro: Rollout, objective: Objective) -> torch.Tensor:
    """The training objective per step (N, T): log p(x_t|.) + log p(r_t|.) - max(KL_t, free_nats)."""
    kl = ro.kl.clamp(min=objective.free_nats) if objective.free_nats > 0 else ro.kl
    rew = ro.reward_log_lik if ro.reward_log_lik is not None else 0.0
    return ro.log_lik + rew - kl


def negative_elbo(ro: Rollout, objective: Objective) -> torch.Tensor:
    return -objective_terms(ro, objective).mean()


def metrics(ro: Rollout) -> dict[str, float]:
    """Per-step means in nats (ELBO without free nats)."""
    out = {k: float(getattr(ro, k).detach().mean()) for k in ("elbo", "kl", "log_lik")}
    if ro.reward_log_lik is not None:
        out["reward_log_lik"] = float(ro.reward_log_lik.detach().mean())
    return out


@contextmanager
def frozen(module: torch.nn.Module):
    """Parameters of `module` receive no gradient inside the block."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class Loss(ABC):
    """A training loss: __call__(model, posterior, batch, objective) -> (loss (scalar), metrics {name: float}).
    new_round() is called before each round of updates (the agent: the updates after each episode); a loss whose
    behaviour depends on the update's place in the round resets its count there (so a run resumed at an episode
    boundary goes on as an uninterrupted one)."""

    def new_round(self) -> None:
        pass

    @abstractmethod
    def __call__(self, model: SequenceModel, posterior, batch: SequenceBatch,
                 objective: Objective) -> tuple[torch.Tensor, dict[str, float]]:
        ...


class ElboLoss(Loss):
    """-ELBO (with free nats) at the posterior's context: model and posterior learn at the same q."""

    def __call__(self, model, posterior, batch, objective):
        ro = rollout(model, posterior, batch, posterior.context(model, batch), objective.n_samples)
        return negative_elbo(ro, objective), metrics(ro)


class DetachedRefinementLoss(Loss):
    """-ELBO(lambda^0) for the encoder (model held fixed) + -ELBO(lambda^K) for the model (posterior held fixed), with
    lambda^K = posterior.improve(lambda^0) detached. Metrics are those at lambda^K, plus elbo_init at lambda^0.

    every = k > 1 refines on every k-th call of a round only (the 1st, the (k+1)-th, ... since new_round()); the calls
    between are amortized updates, -ELBO(lambda^0) for the model and the encoder together, at 1/(2 + K) of a refined
    update's rollouts. The model then learns at lambda^K on about 1/k of its updates and at lambda^0 on the others.
    Metrics: elbo, kl and log_lik at lambda^K on refining calls and at lambda^0 on the others, `refined` 1 or 0 (so
    their means over an episode's updates mix the two in the proportion given by the mean of `refined`)."""

    def __init__(self, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"refine every k-th update needs an integer k >= 1, got {every!r}")
        self.every, self.calls = every, 0

    def new_round(self) -> None:
        self.calls = 0

    def __call__(self, model, posterior, batch, objective):
        self.calls += 1
        if (self.calls - 1) % self.every:
            ro0 = rollout(model, posterior, batch, posterior.initial_params(model, batch), objective.n_samples)
            return negative_elbo(ro0, objective), {**metrics(ro0), "elbo_init": float(ro0.elbo.detach().mean()),
                                                   "refined": 0.0}
        with frozen(model):
            lam0 = posterior.initial_params(model, batch)
            ro0 = rollout(model, posterior, batch, lam0)
            encoder_loss = negative_elbo(ro0, objective)
        lam_k, improvement_loss = self.improved(model, posterior, batch, lam0, objective)
        with frozen(posterior):
            ro = rollout(model, posterior, batch, lam_k.detach(), objective.n_samples)
        out = {**metrics(ro), "elbo_init": float(ro0.elbo.detach().mean()), "refined": 1.0}
        return negative_elbo(ro, objective) + encoder_loss + improvement_loss, out

    def improved(self, model, posterior, batch, lam0, objective) -> tuple[torch.Tensor, torch.Tensor | float]:
        """(lambda^K, the loss of whatever made it, 0 for fixed gradient steps)."""
        return posterior.improve(model, batch, lam0, posterior.refine_settings), 0.0


class UnrolledRefinementLoss(Loss):
    """-ELBO(lambda^K) with lambda^K a differentiable function of lambda^0 and the model (second-order terms
    included): one loss whose gradient reaches the encoder through all K steps."""

    def __call__(self, model, posterior, batch, objective):
        lam0 = posterior.initial_params(model, batch)
        ro0 = rollout(model, posterior, batch, lam0)
        lam_k = refine(model, posterior, batch, lam0, posterior.refine_settings, unrolled=True)
        ro = rollout(model, posterior, batch, lam_k, objective.n_samples)
        return negative_elbo(ro, objective), {**metrics(ro), "elbo_init": float(ro0.elbo.detach().mean())}
