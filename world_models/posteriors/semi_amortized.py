"""Semi-amortized posterior: amortized initialization, then K gradient steps on the sequence ELBO.

The refined parameters are per-step offsets delta_t = (dmu_t, dlog sigma_t) of the amortized posterior:

    q(z_t | h_t, x, delta_t) = N(mu_phi(h_t, ctx_t) + dmu_t, diag(sigma_phi(h_t, ctx_t) exp(dlog sigma_t))^2)

delta^0 = 0 (so K = 0 is exactly the amortized posterior), delta^K after K refinement steps (refine.py).
The family is the encoder's, with free per-step offsets: for encoders whose q(z_t | .) does not depend
on the sampled past (SSMs without h_t) it is the mean-field Gaussian family itself; for the RSSM it stays
structured: the offsets shift q(z_t | h_t, x_t), which still follows the sampled past through h_t. (An
earlier version refined a mean-field (mu_t, log sigma_t) read off one rollout; on the RSSM that loses the
dependence on the sampled past, and the agent trained with it did not learn cartpole: about 1 nat per
step worse ELBO than the amortized posterior, evaluation returns below 30 after 20 episodes.)
Variants for training (its `loss`, losses.py):
- detached (Krishnan et al. 2018): the model learns at lambda^K (held fixed), the encoder at its
  own output lambda^0 (with the model held fixed);
- unrolled (Kim et al. 2018): one loss, -ELBO(lambda^K), whose gradient reaches the encoder
  through all K steps.
Cost: one amortized pass, then per step one rollout forward + backward of the model (measured at
PlaNet sizes, batch 50 x 50: about 0.6 of an amortized training step each; unrolled keeps all K
graphs alive and costs about 1.6x the detached variant at K = 1; benchmarks/bench_inference.py).
"""
from __future__ import annotations

import torch

from ..base import MLPHead, SequenceBatch, SequenceModel, diag_normal, with_offsets
from .amortized import AmortizedPosterior
from .base import Family, LocalGaussian
from .losses import DetachedRefinementLoss, UnrolledRefinementLoss
from .refine import RefineSettings

VARIANT_LOSSES = {"detached": DetachedRefinementLoss, "unrolled": UnrolledRefinementLoss}

VARIANTS = tuple(VARIANT_LOSSES)


class SemiAmortizedPosterior(LocalGaussian):
    step_cost = "one amortized pass + K x (model rollout forward and backward)"

    def __init__(self, model: SequenceModel, refine_settings: RefineSettings | None = None, variant: str = "detached",
                 smoothing_init: bool = False, refine_every: int = 1, **encoder_settings):
        """refine_every = k: the detached loss refines on every k-th training update only (losses.py)."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown semi-amortized variant {variant!r}; valid choices: {', '.join(VARIANTS)}")
        if refine_every != 1 and variant != "detached":
            raise ValueError(f"refine_every = {refine_every} needs the detached variant (the unrolled loss refines "
                             f"on every update)")
        super().__init__(model, DetachedRefinementLoss(refine_every) if variant == "detached" else
                         VARIANT_LOSSES[variant]())
        self.refine_settings = refine_settings or RefineSettings()
        self.variant = variant
        self.encoder = AmortizedPosterior(model, smoothing=smoothing_init, **encoder_settings)
        self.family = Family(self.encoder.family.kind, free_offsets=True)

    def amortized_part(self):
        return self.encoder

    def describe(self) -> str:
        r = self.refine_settings
        return (f"its encoder + K = {r.steps} refinement steps ({r.optimizer}, lr {r.lr:g}, {r.n_samples} "
                f"sample{'s' if r.n_samples > 1 else ''} per step), as in training")

    def step(self, ctx_t, h_t, z_prev):
        fixed, delta = self.split(ctx_t)
        q = self.encoder.step(fixed, h_t, z_prev)
        return diag_normal(*with_offsets(q.mean, q.stddev, delta))

    def mean_field(self, ctx):
        """The encoder's (mean, std) with the offsets where the encoder is mean-field (models without h_t); None on
        the RSSM, where q(z_t | h_t, x) follows the sampled past."""
        fixed, delta = self.split(ctx)
        encoder = self.encoder.mean_field(fixed)
        if encoder is None:
            return None
        return with_offsets(*encoder, delta)

    def mlp_head(self, ctx):
        """The encoder's head with the offsets; none for `unrolled`, whose refinement differentiates twice."""
        if self.variant == "unrolled":
            return None
        fixed, delta = self.split(ctx)
        head = self.encoder.mlp_head(fixed)
        return None if head is None else MLPHead(head.head, head.min_std, head.ctx, delta)

    def split(self, ctx):
        """(encoder context, offsets delta): the encoder's part is fixed during refinement."""
        return ctx[..., :-2 * self.z_dim], ctx[..., -2 * self.z_dim:]

    def params_from(self, ro, ctx):
        """The encoder's context with zero offsets (the amortized posterior itself)."""
        return torch.cat([ctx, ctx.new_zeros(*ctx.shape[:-1], 2 * self.z_dim)], -1)

    def initial_params(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        """The context (B, T, C) at delta = 0: the encoder's output with zero offsets (the encoder itself)."""
        return self.params_from(None, self.encoder.context(model, batch))

    def context(self, model: SequenceModel, batch: SequenceBatch, steps: int | None = None) -> torch.Tensor:
        """lambda^K (detached); `steps` overrides K."""
        s = self.refine_settings if steps is None else RefineSettings(**{**vars(self.refine_settings), "steps": steps})
        with torch.no_grad():
            lam0 = self.initial_params(model, batch)
        return self.improve(model, batch, lam0, s)
