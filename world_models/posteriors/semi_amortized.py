"""Semi-amortized posterior: amortized initialization, then K gradient steps on the sequence ELBO.

lambda^0 = the amortized posterior's (mu_t, log sigma_t) along one sampled rollout; lambda^K after
K refinement steps (see refine.py). Family after refinement: mean-field Gaussian across time.
Variants for training:
- detached (Krishnan et al. 2018): the model learns at lambda^K (held fixed), the encoder at its
  own output lambda^0 (with the model held fixed);
- unrolled (Kim et al. 2018): one loss, -ELBO(lambda^K), whose gradient reaches the encoder
  through all K steps.
Cost: one amortized pass, then per step one rollout forward + backward of the model (measured at
PlaNet sizes, batch 50 x 50: about 0.6 of an amortized training step each; unrolled keeps all K
graphs alive and costs about 1.6x the detached variant at K = 1; benchmarks/bench_inference.py).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ..base import SequenceBatch, SequenceModel
from ..rollout import Rollout, rollout
from .amortized import AmortizedPosterior
from .base import LocalGaussian, Objective, local_params, metrics, negative_elbo
from .refine import RefineSettings, refine

VARIANTS = ("detached", "unrolled")


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


class SemiAmortizedPosterior(LocalGaussian):
    name = "semi_amortized"
    step_cost = "one amortized pass + K x (model rollout forward and backward)"

    def __init__(self, model: SequenceModel, refine_settings: RefineSettings | None = None, variant: str = "detached",
                 smoothing_init: bool = False, **encoder_settings):
        super().__init__(model)
        if variant not in VARIANTS:
            raise ValueError(f"unknown semi-amortized variant {variant!r}; valid choices: {', '.join(VARIANTS)}")
        self.refine_settings = refine_settings or RefineSettings()
        self.variant = variant
        self.encoder = AmortizedPosterior(model, smoothing=smoothing_init, **encoder_settings)

    def initial_params(self, model, batch) -> tuple[torch.Tensor, Rollout]:
        ro = rollout(model, self.encoder, batch, self.encoder.context(model, batch))
        return local_params(ro), ro

    def context(self, model: SequenceModel, batch: SequenceBatch, steps: int | None = None) -> torch.Tensor:
        """lambda^K (detached); `steps` overrides K."""
        s = self.refine_settings if steps is None else RefineSettings(**{**vars(self.refine_settings), "steps": steps})
        with torch.no_grad():
            lam0, _ = self.initial_params(model, batch)
        return refine(model, self, batch, lam0, s)

    def training_loss(self, model: SequenceModel, batch: SequenceBatch, objective: Objective):
        s = self.refine_settings
        if self.variant == "unrolled":
            lam0, ro0 = self.initial_params(model, batch)
            lamK = refine(model, self, batch, lam0, s, unrolled=True)
            ro = rollout(model, self, batch, lamK, objective.n_samples)
            out = metrics(ro)
            out["elbo_init"] = float(ro0.elbo.detach().mean())
            return negative_elbo(ro, objective), out
        with frozen(model):                     # encoder loss: -ELBO(lambda^0), model held fixed
            lam0, ro0 = self.initial_params(model, batch)
            enc_loss = negative_elbo(ro0, objective)
        lamK = refine(model, self, batch, lam0, s)
        ro = rollout(model, self, batch, lamK, objective.n_samples)   # model loss at lambda^K (fixed)
        out = metrics(ro)
        out["elbo_init"] = float(ro0.elbo.detach().mean())
        return negative_elbo(ro, objective) + enc_loss, out
