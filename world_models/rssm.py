"""PlaNet's recurrent state-space model (Hafner et al. 2019).

    h_t = GRU(h_{t-1}, ELU(W [z_{t-1}, a_{t-1}]))      deterministic path
    z_t ~ N(mu(h_t), diag(softplus(.) + min_std)^2)   prior
    x_t ~ N(dec(h_t, z_t), obs_std^2)                 emission (obs_std fixed, or learned per dim)
    r_t ~ N(rew(h_t, z_t), 1)                         reward head

Defaults are PlaNet's: GRU 200, stochastic 30, hidden 200, min std 0.1, unit observation std.
The posterior q(z_t | h_t, x_t) is not part of the model: it is one of the swappable posteriors.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .base import ModelState, SequenceModel, diag_normal
from .networks import is_pixels, mlp, obs_decoder, softplus_std


class RSSM(SequenceModel):
    has_reward = True
    prior_from_h = True

    def __init__(self, obs_shape: tuple, action_dim: int, deter_dim: int = 200, z_dim: int = 30, hidden: int = 200,
                 min_std: float = 0.1, obs_std: Optional[float] = 1.0):
        super().__init__()
        self.obs_shape, self.action_dim, self.deter_dim, self.z_dim = tuple(obs_shape), action_dim, deter_dim, z_dim
        self.min_std = min_std
        self.embed_za = nn.Sequential(nn.Linear(z_dim + action_dim, hidden), nn.ELU())
        self.gru = nn.GRUCell(hidden, deter_dim)
        self.prior_net = mlp(deter_dim, hidden, 2 * z_dim, layers=1)
        self.decoder = obs_decoder(self.obs_shape, deter_dim + z_dim, hidden)
        self.reward_net = mlp(deter_dim + z_dim, hidden, 1, layers=2)
        self.event_dims = 3 if is_pixels(self.obs_shape) else 1
        # obs_std=None learns a log std per observation dimension (vectors) or one for all pixels
        self.obs_log_std = None if obs_std is not None else nn.Parameter(
            torch.zeros(1 if self.event_dims == 3 else self.obs_shape[0]))
        self.obs_std = obs_std

    def prior_step(self, state: ModelState, action, t):
        h = self.next_h(state, action, t)
        return h, self.prior(h)

    def next_h(self, state: ModelState, action, t):
        return self.gru(self.embed_za(torch.cat([state.z, action], -1)), state.h)

    def deter_path(self, h0: torch.Tensor, z_prev: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """h_1..h_T (N, T, H) from h_0 and given z_0..z_{T-1}, a_0..a_{T-1} (N, T, .): what next_h computes
        step by step, with the embedding of all steps in one call and the recurrence in one torch.gru call
        (its loop runs in C++). Used where the latents do not depend on h (mean-field posteriors)."""
        x = self.embed_za(torch.cat([z_prev, actions], -1))
        g = self.gru
        return torch.gru(x, h0[None], [g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh], True, 1, 0.0, self.training,
                         False, True)[0]

    def prior(self, h):
        mean, raw = self.prior_net(h).chunk(2, -1)
        return diag_normal(mean, softplus_std(raw, self.min_std))

    def _obs_std(self, mean):
        if self.obs_log_std is None:
            return self.obs_std
        std = self.obs_log_std.exp()
        return std.view(1, 1, 1).expand_as(mean) if self.event_dims == 3 else std.expand_as(mean)

    def emission(self, h, z):
        mean = self.decoder(torch.cat([h, z], -1))
        return diag_normal(mean, self._obs_std(mean), self.event_dims)

    def reward(self, h, z):
        return diag_normal(self.reward_net(torch.cat([h, z], -1)).squeeze(-1), 1.0, 0)

    def noise_summary(self) -> dict[str, float]:
        if self.obs_log_std is None:
            return {"emission_var": float(self.obs_std ** 2)}
        return {"emission_var": float(self.obs_log_std.detach().exp().pow(2).mean())}
