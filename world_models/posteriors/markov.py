"""Markov-Gaussian posterior with free local parameters, per sequence:

    q(z_{1:T}) = q(z_1) prod_{t>1} q(z_t | z_{t-1}),   q(z_t | z_{t-1}) = N(A_t z_{t-1} + b_t, L_t L_t^T)

lambda_t = (b_t, A_t, L_t) with L_t lower triangular (log of its diagonal, floored softly at LOG_DIAG_FLOOR), context
(B, T, Dz + Dz^2 + Dz(Dz+1)/2);
z_0 = 0, so q(z_1) = N(b_1, L_1 L_1^T). This family contains the exact posterior of a linear-Gaussian SSM
(p(z_t | z_{t-1}, x_{1:T}) is Gaussian and linear in z_{t-1}), so its optimum q* has approximation gap 0 there; for
nonlinear SSMs it is the structured q* the mean-field one lacks. It ignores h_t: for models without one (the toy
SSMs). MarkovGaussianLocal holds free per-sequence parameters; AmortizedMarkovPosterior (registered as
`amortized_markov`, for models without h_t) computes them with an encoder. The gap decomposition fits one to the
frozen model and optimizes its lambda per sequence from the encoder's output (optimum.optimize): the Markov q*.
Cost per optimizer step: one model rollout forward and backward (z_t drawn in a loop of small matrix products, as
q depends on the sampled z_{t-1}; q, priors and KLs of all steps at once: rollout.ssm_loop).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal

from ..base import SequenceBatch, SequenceModel
from .amortized import AmortizedPosterior
from .base import Family, FamilyKind, LocalGaussian
from .optimum import OptimumSettings, optimize
from .refine import RefineSettings


# log L_ii is floored softly at LOG_DIAG_FLOOR (std 2e-22): below FLOOR + 20, log L_ii = FLOOR + softplus(raw - FLOOR),
# above, raw itself, bit for bit. Without it an encoder extrapolating to raw < -104 (float32 exp underflows to 0)
# made L singular and stopped the toy experiment (square, the Markov encoder fitted to semi_amortized seed 0).
LOG_DIAG_FLOOR = -50.0


def _floored(raw: torch.Tensor) -> torch.Tensor:
    """log L_ii of a raw log-diagonal: raw where raw > FLOOR + 20, else FLOOR + softplus(raw - FLOOR) (> FLOOR)."""
    return torch.where(raw > LOG_DIAG_FLOOR + 20, raw, LOG_DIAG_FLOOR + F.softplus(raw - LOG_DIAG_FLOOR))


def _unfloored(log_diag: torch.Tensor) -> torch.Tensor:
    """The raw log-diagonal whose _floored value is log_diag (> FLOOR): softplus^-1(y) = y + log(-expm1(-y))."""
    y = log_diag - LOG_DIAG_FLOOR
    return torch.where(log_diag > LOG_DIAG_FLOOR + 20, log_diag, LOG_DIAG_FLOOR + y + torch.log(-torch.expm1(-y)))


class MarkovGaussianLocal(LocalGaussian):
    family = Family(FamilyKind.MARKOV)
    has_encoder = False
    step_cost = "per optimizer step: one model rollout forward + backward (step by step)"

    def __init__(self, model: SequenceModel, settings: OptimumSettings | None = None):
        super().__init__(model)
        self.fit = settings or OptimumSettings()
        if model.deter_dim:
            raise ValueError(f"the Markov-Gaussian local posterior ignores h_t; {type(model).__name__} has one "
                             f"(deter_dim {model.deter_dim})")
        d = model.z_dim
        self.rows, self.cols = torch.tril_indices(d, d)

    def amortized_part(self):
        return None

    def context(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        """q*: optimum.optimize from N(0, I) at every step with this posterior's settings."""
        return optimize(model, self, batch, self.initial_params(model, batch), self.fit)[0]

    def describe(self) -> str:
        return "its per-sequence Markov-Gaussian optimum"

    def unpack(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b (..., Dz), A (..., Dz, Dz), L (..., Dz, Dz) lower triangular with positive diagonal) of a context."""
        d = self.z_dim
        b, A, tri = ctx[..., :d], ctx[..., d:d + d * d], ctx[..., d + d * d:]
        diagonal = (self.rows == self.cols).to(ctx.device)
        tri = torch.where(diagonal, _floored(tri).exp(), tri)
        L = ctx.new_zeros(*ctx.shape[:-1], d, d)
        L[..., self.rows, self.cols] = tri
        return b, A.unflatten(-1, (d, d)), L

    def pack(self, b: torch.Tensor, A: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        """The context of (b, A, L); L's diagonal must be positive."""
        tri = L[..., self.rows, self.cols]
        tri = torch.where((self.rows == self.cols).to(L.device), _unfloored(tri.log()), tri)
        return torch.cat([b, A.flatten(-2), tri], -1)

    def step(self, ctx_t, h_t, z_prev):
        b, A, L = self.unpack(ctx_t)
        return MultivariateNormal((A @ z_prev.unsqueeze(-1)).squeeze(-1) + b, scale_tril=L)

    def mean_field(self, ctx):
        return None

    def markov_gaussian(self, ctx):
        return self.unpack(ctx)

    def initial_params(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        """A = 0, b = 0, L = I: q = N(0, I) at every step."""
        p = next(model.parameters())
        d = self.z_dim
        zeros = p.new_zeros(batch.batch_size, batch.length, d)
        return self.pack(zeros, zeros.new_zeros(*zeros.shape, d), torch.diag_embed(torch.ones_like(zeros)))


class AmortizedMarkovPosterior(MarkovGaussianLocal):
    """The Markov-Gaussian family with an encoder (DKS-style, Krishnan et al. 2017, with a linear combiner):
    (b_t, A_t raw, L_t) = W f_t + c, f_t = [e(x_t), summary of x_{<=t}, summary of x_{>t}] the features of the
    `amortized_smoothing` encoder (posteriors/amortized.py), and A_t = tanh(A_t raw) entrywise. p(z_t | z_{t-1},
    x_{1:T}) depends on x only through x_{t:T}, and for a stable 1-d LGSSM its coefficient on z_{t-1} shrinks the
    transition's, so the exact posterior is within reach of this encoder. (Without the tanh, one Adam step on
    observations of scale 10 moved A_t by about 6, and z_t = A_t z_{t-1} + ... overflowed over 25 steps. A layer
    normalization of f_t as well made the encoder worse on an LGSSM, 0.23 against 0.11 nats per step: it breaks
    the linear dependence of the exact posterior on x. b_t and log diag L_t stay unbounded; for Dz > 1 the entrywise
    bound does not bound A_t's spectral radius.) Its context is lambda itself, so gradient
    refinement (improve) and q* move all of it, A_t unbounded. Models without h_t only.
    Cost per use: one encoder pass (two GRUs) and one linear map per step."""
    has_encoder = True
    step_cost = "one encoder pass over the sequence (forward and backward GRU) + one linear map per step"

    def __init__(self, model: SequenceModel, refine_settings: RefineSettings | None = None, **encoder_settings):
        super().__init__(model)
        self.refine_settings = refine_settings or RefineSettings()
        self.features = AmortizedPosterior(model, smoothing=True, **encoder_settings)
        d = model.z_dim
        head = torch.nn.Linear(self.features.head[0].in_features, d + d * d + d * (d + 1) // 2)
        torch.nn.init.normal_(head.weight, std=0.01)   # starts near q = N(0, I) at every step
        torch.nn.init.zeros_(head.bias)
        self.features.head = torch.nn.Sequential(head)   # the features' head is this linear map

    def amortized_part(self):
        return self

    def describe(self) -> str:
        return "its encoder"

    def context(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        f = self.features.context(model, batch)
        b, A, tri = self.features.head(f).split(
            [self.z_dim, self.z_dim ** 2, len(self.rows)], -1)
        return torch.cat([b, torch.tanh(A), tri], -1)

    def initial_params(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        """Improvement starts from the encoder's output."""
        return self.context(model, batch)
