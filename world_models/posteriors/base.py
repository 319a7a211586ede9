"""The posterior interface (a guide, in Pyro's terms): swap it without touching the model.

A posterior turns a batch into a context ctx (B, T, C), everything it knows about each sequence,
then gives q(z_t | ctx_t, h_t, z_{t-1}) one step at a time inside `rollout`. How it is trained is a separate,
swappable object, its `loss` (losses.py): -ELBO with free nats by default; posteriors that train the model
and the encoder at different variational parameters carry a two-part loss.
"""
from __future__ import annotations

import enum
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.distributions import Distribution

from ..base import MLPHead, SequenceBatch, SequenceModel, diag_normal
from ..rollout import Rollout
from .losses import ElboLoss, Loss, Objective
from .refine import refine


class FamilyKind(enum.Enum):
    MEAN_FIELD = "mean-field Gaussian across time, diagonal per step"
    STRUCTURED = "diagonal Gaussian per step given h_t (structured through the sampled past)"
    MARKOV = "Markov-Gaussian q(z_1) prod_t q(z_t | z_{t-1}, x)"
    EXACT = "the exact posterior"


@dataclass(frozen=True)
class Family:
    """A posterior's variational family as data: its kind, and whether free per-step offsets of an encoder's
    mean and log std are part of it (semi-amortized and iterative posteriors: the same kind, optimized per
    sequence from the encoder's output)."""
    kind: FamilyKind
    free_offsets: bool = False

    def __str__(self) -> str:
        return self.kind.value + (", with free per-step offsets of its mean and log std" if self.free_offsets else "")


class Posterior(nn.Module, metaclass=ABCMeta):
    """The contract of a posterior. make_posterior sets `name` (the registry's).

    Every subclass must set `family` (a Family: its variational family, as data) and `step_cost` (what one use
    costs, in words), and implement `context(model, batch) -> ctx (B, T, C)` and
    `step(ctx_t, h_t, z_prev) -> q(z_t | .)`. Those with local parameters (LocalGaussian) also implement
    `initial_params(model, batch) -> lambda (B, T, C)`, and may override `improve` (gradient steps by default).
    It may set another `loss` (a losses.Loss; default ElboLoss: -ELBO with free nats at its context), override
    `mlp_head`, `mean_field` and `markov_gaussian` (what the rollout's fast paths need; None: the plain loop),
    `describe` and the attributes below.

    What the agent's belief and the gap code ask of a posterior (never its class or name):
    - has_encoder: it gives q for a new sequence in one pass (amortized, semi-amortized); without one (per-sequence)
      q is optimized per sequence and the agent's belief must refine at every decision;
    - amortized_part(): the encoder that filters one step at a time for the belief (None without one);
    - refinable: its context is local parameters lambda that `improve` makes better (LocalGaussian);
    - default_decision_steps: refinement steps at each of the agent's decisions when the user gives none;
    - default_decision_lr: their step size when the user gives none (None: the run's training refinement step
      size, --refine-lr);
    - growing_state: the state_dict entries whose leading sizes grow with the data seen (a per-sequence store), so
      that a checkpoint of them has another shape than a fresh posterior's."""

    name: str = "unregistered"
    family: Family
    step_cost: str = ""
    has_encoder: bool = True
    refinable: bool = False
    default_decision_steps: int = 0
    default_decision_lr: float | None = None
    growing_state: tuple[str, ...] = ()

    def describe(self) -> str:
        """What its ELBO is of, in the words of the gap tables (e.g. 'its encoder')."""
        return "its encoder" if self.has_encoder else "its per-sequence optimum"

    def amortized_part(self) -> Optional["Posterior"]:
        """The amortized encoder inside this posterior (itself by default)."""
        return self

    def __init__(self, model: SequenceModel, loss: Loss | None = None):
        super().__init__()
        self.z_dim = model.z_dim
        self.loss = loss or ElboLoss()

    @abstractmethod
    def context(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        """Everything it knows about each sequence of the batch: ctx (B, T, C)."""

    @abstractmethod
    def step(self, ctx_t: torch.Tensor, h_t: torch.Tensor, z_prev: torch.Tensor) -> Distribution:
        """q(z_t | ctx_t (N, C), h_t (N, Dh), z_{t-1} (N, Dz)), a distribution over (N, Dz)."""

    def mlp_head(self, ctx: torch.Tensor) -> Optional[MLPHead]:
        """Its step as data (an MLP head on [h_t, ctx_t], world_models.base.MLPHead), for posteriors whose step is
        one; the rollout picks a fast loop for it where the model has one. None (the default): the plain loop."""
        return None

    def mean_field(self, ctx: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """(mean, std) (N, T, Dz) of every step, for posteriors whose q(z_t) depends on neither h_t nor z_{t-1}:
        a rollout then draws all z at once and runs the model's deterministic path in one call. None (the
        default): q follows the sampled past."""
        return None

    def markov_gaussian(self, ctx: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(b (N, T, Dz), A (N, T, Dz, Dz), L (N, T, Dz, Dz) lower triangular) for posteriors whose step is
        q(z_t | z_{t-1}) = N(A_t z_{t-1} + b_t, L_t L_t^T) whatever h_t: on models without h_t a rollout then
        evaluates q, the priors and the KLs of all steps at once. None (the default): the plain loop."""
        return None

    def training_loss(self, model: SequenceModel, batch: SequenceBatch, objective: Objective):
        """(loss, metrics) for one gradient step on the model and this posterior's parameters: its `loss`."""
        return self.loss(model, self, batch, objective)


class LocalGaussian(Posterior):
    """Mean-field Gaussian over time with free local parameters lambda_t = (mu_t, log sigma_t):
    q(z_{1:T}) = prod_t N(z_t; mu_t, diag sigma_t^2). The context *is* lambda (B, T, 2 Dz).
    Subclasses may put a fixed part before the free one in the context (see `split`); refinement
    moves only the free part."""

    family = Family(FamilyKind.MEAN_FIELD)
    refinable = True

    def step(self, ctx_t, h_t, z_prev):
        mu, log_std = ctx_t.chunk(2, -1)
        return diag_normal(mu, log_std.exp())

    def mean_field(self, ctx):
        mu, log_std = ctx.chunk(2, -1)
        return mu, log_std.exp()

    def split(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fixed, free) parts of a context; here all of it is free."""
        return ctx[..., :0], ctx

    def improve(self, model: SequenceModel, batch: SequenceBatch, lam: torch.Tensor, settings) -> torch.Tensor:
        """Better local parameters (contexts (B, T, C)) for `batch` from `lam`: settings.steps gradient steps on the
        ELBO (refine.RefineSettings) by default; a posterior with a learned update overrides it."""
        return refine(model, self, batch, lam, settings)

    @abstractmethod
    def initial_params(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        """The local parameters (context (B, T, C)) that improvement starts from for a batch."""

    def params_from(self, ro: Rollout, ctx: torch.Tensor | None) -> torch.Tensor:
        """Starting context for refinement after a rollout `ro` of the amortized (or prior) posterior
        whose context was ctx: here lambda read off the rollout."""
        return local_params(ro)


def local_params(ro: Rollout, n_samples: int = 1) -> torch.Tensor:
    """lambda = (mu, log sigma) (B, T, 2 Dz) read off a rollout's posterior (the first sample)."""
    B = ro.q_mean.shape[0] // n_samples
    return torch.cat([ro.q_mean[:B], ro.q_std[:B].log()], -1)
