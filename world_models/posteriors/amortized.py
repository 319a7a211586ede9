"""Amortized posteriors: an encoder network outputs q for every step of any sequence.

Context per step: the embedding of x_t (zeroed where missing) and the observed flag m_t;
plus, for models without a deterministic path, a forward GRU summary of x_{<=t}; plus, for the
smoother, a backward GRU summary of x_{>t}. The head maps [h_t, ctx_t] to (mu_t, sigma_t):
- RSSM (has h_t): q(z_t | h_t, x_t) as in PlaNet (filter) or q(z_t | h_t, x_t, x_{>t}) (smoother).
  Family: diagonal Gaussian per step, conditioned on the sampled past through h_t (structured).
- SSMs without h_t: q(z_t | x_{<=t}) or q(z_t | x_{1:T}): mean-field across time.
Cost per use: one encoder pass over the sequence, then one head evaluation per step.
"""
from __future__ import annotations

import torch
from torch import nn

from ..base import MLPHead, SequenceBatch, SequenceModel, diag_normal
from ..networks import encoder_out_dim, mlp, obs_encoder, softplus_std
from .base import Family, FamilyKind, Posterior


class AmortizedPosterior(Posterior):
    def __init__(self, model: SequenceModel, smoothing: bool = False, hidden: int | None = None,
                 embed_dim: int | None = None, rnn_dim: int | None = None, min_std: float | None = None):
        super().__init__(model)
        hidden = hidden or (200 if model.deter_dim else 64)
        has_h = model.deter_dim > 0
        self.family = Family(FamilyKind.STRUCTURED if has_h else FamilyKind.MEAN_FIELD)
        self.step_cost = "one encoder pass over the sequence + one head MLP per step (no gradient steps)"
        self.smoothing, self.forward_rnn = smoothing, not has_h
        self.min_std = min_std if min_std is not None else getattr(model, "min_std", 1e-3)
        self.encoder = obs_encoder(model.obs_shape, hidden, embed_dim or hidden)
        e = encoder_out_dim(self.encoder) + 1
        rnn_dim = rnn_dim or hidden
        ctx_dim = e
        if self.forward_rnn:
            self.fwd = nn.GRU(e, rnn_dim, batch_first=True)
            ctx_dim += rnn_dim
        if smoothing:
            self.bwd = nn.GRU(e, rnn_dim, batch_first=True)
            ctx_dim += rnn_dim
        self.head = mlp(model.deter_dim + ctx_dim, hidden, 2 * model.z_dim, layers=1)

    def context(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        model.check_batch(batch)
        m = batch.mask.unsqueeze(-1).to(self.head[0].weight.dtype)
        obs = batch.obs.to(m.dtype)
        e = torch.cat([self.encoder(obs) * m, m], -1)            # (B, T, E + 1)
        parts = [e]
        if self.forward_rnn:                                      # summary of x_{<=t}
            parts.append(self.fwd(e)[0])
        if self.smoothing:                                        # summary of x_{>t}: reverse, run, shift
            b = self.bwd(e.flip(1))[0].flip(1)                    # b_t summarizes x_{t:T}
            parts.append(torch.cat([b[:, 1:], torch.zeros_like(b[:, :1])], 1))
        return torch.cat(parts, -1)

    def step(self, ctx_t, h_t, z_prev):
        return diag_normal(*MLPHead(self.head, self.min_std, ctx_t)(h_t))

    def mlp_head(self, ctx):
        return MLPHead(self.head, self.min_std, ctx)

    def mean_field(self, ctx):
        """Models without h_t: q(z_t | x) depends on ctx_t alone, so every step's (mean, std) comes from one call."""
        if self.family.kind is not FamilyKind.MEAN_FIELD:
            return None
        mean, raw = self.head(ctx).chunk(2, -1)
        return mean, softplus_std(raw, self.min_std)
