"""Iterative amortized posterior (Marino, Yue and Mandt 2018): a learned update of the local parameters from the
ELBO's gradient, in place of the semi-amortized posterior's gradient steps.

The local parameters are the semi-amortized posterior's per-step offsets delta_t = (dmu_t, dlog sigma_t) of its
encoder's output (delta^0 = 0: the encoder itself), so the family is the same: the encoder's family with free
per-step offsets (mean-field across time for SSMs without h_t; structured through h_t on the RSSM). Each of K
iterations computes g = grad_delta ELBO(delta^k) (one model rollout forward and backward w.r.t. delta) and applies
the gated update, shared by every step and sequence:

    u_t = [delta_t, g_t / rms(g_t), log rms(g_t)]          (rms over the step's 2 Dz entries; g detached)
    delta_t <- delta_t + f(u_t) * sigmoid(gate(u_t))        (f, gate: the two halves of one MLP's output)

Training (its `loss`, LearnedUpdateLoss): the encoder learns at delta^0 (-ELBO, model held fixed); the update
network minimizes sum_k -ELBO(delta^k) over the K iterations with the training objective's free nats, as the encoder
does (model and encoder held fixed; the plain ELBO's gradient is its input); the model learns at delta^K (held
fixed). With refine_every = k (the agent's default 5, as semi_amortized's) this happens on every k-th update only,
the model and encoder learning together at delta^0 between: learning at delta^K on every update, the model became
one whose encoder's ELBO diverged under its own training again and again. Cost per use: one amortized pass + K x
(one model rollout forward and backward w.r.t. delta, one update-network pass); in training K more rollouts for its
loss.
"""
from __future__ import annotations

import torch

from ..base import SequenceBatch, SequenceModel
from ..networks import mlp
from ..rollout import rollout
from .losses import DetachedRefinementLoss, frozen, negative_elbo
from .refine import RefineSettings, sequence_elbo
from .semi_amortized import SemiAmortizedPosterior


class LearnedUpdateLoss(DetachedRefinementLoss):
    """The detached loss, with lambda^1..K from the posterior's learned update (posterior.iterate) and the update
    network trained on sum_k -ELBO(lambda^k) with the run's free nats (model and encoder held fixed)."""

    def improved(self, model, posterior, batch, lam0, objective):
        with frozen(model), frozen(posterior.encoder):
            lams = posterior.iterate(model, batch, lam0, posterior.iterations, differentiable=True)
            update_loss = sum(negative_elbo(rollout(model, posterior, batch, lam), objective) for lam in lams)
        return (lams[-1] if lams else lam0), update_loss


class IterativeAmortizedPosterior(SemiAmortizedPosterior):
    step_cost = ("one amortized pass + K x (model rollout forward and backward w.r.t. the offsets + one "
                 "update-network pass)")

    def __init__(self, model: SequenceModel, iterations: int = 3, update_hidden: int = 64, refine_every: int = 1,
                 **encoder_settings):
        super().__init__(model, RefineSettings(steps=iterations), variant="detached", **encoder_settings)
        d = 2 * model.z_dim
        self.update_net = mlp(2 * d + 1, update_hidden, 2 * d, layers=2)
        torch.nn.init.zeros_(self.update_net[-1].weight)   # starts as the identity update: delta stays 0
        torch.nn.init.zeros_(self.update_net[-1].bias)
        self.iterations = iterations
        self.loss = LearnedUpdateLoss(refine_every)
        self.default_decision_steps = iterations          # the belief runs its update at every decision

    def describe(self) -> str:
        return f"its encoder + K = {self.iterations} iterations of its learned update, as in training"

    def update(self, delta: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """One gated update delta + f(u) sigmoid(gate(u)) of offsets (..., 2 Dz) from their ELBO gradient g."""
        rms = g.pow(2).mean(-1, keepdim=True).sqrt() + 1e-8
        f, gate = self.update_net(torch.cat([delta, g / rms, rms.log()], -1)).chunk(2, -1)
        return delta + f * torch.sigmoid(gate)

    def iterate(self, model: SequenceModel, batch: SequenceBatch, lam0: torch.Tensor, steps: int,
                differentiable: bool = False) -> list[torch.Tensor]:
        """Contexts after iterations 1..steps from lam0 (B, T, C). differentiable: each stays a function of the
        update network's parameters (for its training loss); the gradient inputs are always detached."""
        fixed, delta = self.split(lam0.detach())
        out = []
        for _ in range(steps):
            d = delta.detach().requires_grad_(True)
            with torch.enable_grad():
                elbo = sequence_elbo(model, self, batch, torch.cat([fixed, d], -1), 1).sum()
                (g,) = torch.autograd.grad(elbo, d)
            with torch.set_grad_enabled(differentiable):
                delta = self.update(delta if differentiable else delta.detach(), g)
            out.append(torch.cat([fixed, delta], -1))
        return out

    def improve(self, model: SequenceModel, batch: SequenceBatch, lam: torch.Tensor,
                settings: RefineSettings) -> torch.Tensor:
        """settings.steps iterations of the learned update from the encoder's output (delta = 0), as it was
        trained: a warm start from earlier offsets is not used (its step size and optimizer do not apply either).
        Warm-started at every decision of the agent, the offsets of a trained update grew without bound
        (|delta| > 100 within 10 decisions on cartpole, then NaN returns in planning)."""
        if not settings.steps:
            return lam
        fixed, delta = self.split(lam)
        return self.iterate(model, batch, torch.cat([fixed, torch.zeros_like(delta)], -1), settings.steps)[-1].detach()
