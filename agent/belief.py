"""The belief the planner starts from: the posterior's estimate of s_t = (h_t, z_t) during an episode.

Each new observation takes one filtering step: h_t from the model's transition, then
z_t ~ q(z_t | h_t, x_t) from the amortized encoder (the posterior's own, or the semi-amortized
posterior's initializer; the per-sequence posterior has none and starts from the prior p(z_t | h_t)).
With refinement (semi_amortized, per_sequence), the last `window` steps are re-inferred at every
decision: lambda over the window (warm-started from the previous decision), K gradient steps on the
window's ELBO from the stored state before the window, and s_t read off a rollout of the result.
"""
from __future__ import annotations

import torch

from world_models.base import ModelState, SequenceBatch, SequenceModel
from world_models.posteriors import Posterior
from world_models.posteriors.refine import RefineSettings
from world_models.rollout import rollout


class Belief:
    def __init__(self, model: SequenceModel, posterior: Posterior, refine_settings: RefineSettings | None = None,
                 window: int = 8):
        if model.deter_dim == 0:
            raise ValueError("the agent's belief filters one step at a time and needs a model with a deterministic "
                             "path (the RSSM)")
        self.model, self.window = model, window
        self.encoder = posterior.amortized_part()
        self.refine_settings = refine_settings if refine_settings is not None and refine_settings.steps > 0 else None
        self.local = posterior if posterior.refinable else None
        if self.refine_settings is not None and self.local is None:
            raise ValueError(f"decision-time refinement (--decision-refine-steps) needs a posterior with local "
                             f"parameters to refine; {posterior.name} has none")
        if self.encoder is None and self.refine_settings is None:
            raise ValueError(f"the {posterior.name} posterior has no encoder: its belief needs decision-time "
                             f"refinement steps > 0")
        self.reset()

    def reset(self) -> None:
        self.obs, self.actions, self.mask, self.lam = [], [], [], []
        self.states = [self.model.initial_state(1)]     # states[k]: after k observations

    def _window_batch(self, first: int) -> SequenceBatch:
        cat = lambda xs: torch.stack(xs[first:])[None]
        return SequenceBatch(cat(self.obs), cat(self.actions), cat(self.mask), start=self.states[first], t0=first)

    @torch.no_grad()
    def update(self, obs: torch.Tensor, prev_action: torch.Tensor, valid: bool = True) -> ModelState:
        """Take in x_t (and a_{t-1}, zeros at t = 0); return s_t for planning."""
        self.obs.append(obs)
        self.actions.append(prev_action)
        self.mask.append(torch.tensor(bool(valid), device=obs.device))
        t = len(self.obs) - 1
        step = self._window_batch(t)
        ctx = None if self.encoder is None else self.encoder.context(self.model, step)
        ro = rollout(self.model, self.encoder, step, ctx)
        if self.local is not None:    # where refinement starts for this step: its amortized (or prior) posterior
            self.lam.append(self.local.params_from(ro, ctx)[0, 0])
        state = ModelState(ro.h[:, -1], ro.z[:, -1])
        if self.refine_settings is not None:
            first = max(0, t + 1 - self.window)
            batch = self._window_batch(first)
            lam = self.local.improve(self.model, batch, torch.stack(self.lam[first:])[None], self.refine_settings)
            self.lam[first:] = list(lam[0])
            ro = rollout(self.model, self.local, batch, lam)
            state = ModelState(ro.h[:, -1], ro.z[:, -1])
        self.states.append(state)
        return state
