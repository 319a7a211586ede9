"""Per-sequence (non-amortized) posterior: no encoder; lambda optimized for each sequence.

Evaluation (`context`, `optimize`) finds Cremer et al.'s q*: initialize (at N(0, I), or along a rollout of
the prior), then optimum.optimize: Adam on the ELBO with `n_samples` samples per step, windows of `window`
steps, stopping after `patience` windows without improvement or at `max_steps`, each sequence keeping its best
window's averaged iterate, never returning worse than its start.
For joint model learning, its loss (WarmStartedSviLoss) keeps lambda for every stored sequence (by
`batch.index`, `stored` / `remember`), warm-starts from it, takes `steps_per_update` steps on the training
objective (free nats included, as an encoder learns) and writes it back.
Family: mean-field Gaussian across time, diagonal per step.
Cost per optimizer step: one model rollout forward and backward with n_samples samples.
"""
from __future__ import annotations

import torch

from ..base import SequenceBatch, SequenceModel
from ..rollout import rollout
from .base import LocalGaussian, local_params
from .losses import Loss, metrics, negative_elbo, objective_terms
from .optimum import OptimumReport, OptimumSettings, optimize
from .refine import RefineSettings, refine

INITS = ("standard_normal", "prior")


class WarmStartedSviLoss(Loss):
    """Per-sequence parameters from the posterior's store (posterior.stored), posterior.train_refine gradient steps
    on the training objective (free nats and reward included, as an encoder learns), written back
    (posterior.remember); the model learns at the result."""

    def __call__(self, model, posterior, batch, objective):
        if batch.index is None:
            raise ValueError("per_sequence training keeps parameters per stored sequence and needs batch.index")
        lam = refine(model, posterior, batch, posterior.stored(model, batch), posterior.train_refine,
                     per_step=lambda ro: objective_terms(ro, objective))
        posterior.remember(batch, lam)
        ro = rollout(model, posterior, batch, lam, objective.n_samples)
        return negative_elbo(ro, objective), metrics(ro)


class PerSequencePosterior(LocalGaussian):
    has_encoder = False
    # its belief is optimized at every decision (over the last decision_window steps), warm-started from the last:
    # on cartpole (episode 30, one episode of 60 decisions) the window's ELBO per step averaged -9.6 nats with 3
    # steps at lr 0.03, -0.9 with 10 at 0.03, 0.8 with 20 at 0.1, 1.0 with 30 and 0.9 with 100 at 0.1 (converged)
    default_decision_steps = 20
    default_decision_lr = 0.1
    growing_state = ("store",)
    step_cost = "per optimizer step: one model rollout forward + backward with n_samples samples"

    def __init__(self, model: SequenceModel, lr: float = 1e-3, n_samples: int = 50, window: int = 100,
                 patience: int = 10, max_steps: int = 5000, init: str = "standard_normal",
                 steps_per_update: int = 10, train_lr: float = 0.05, train_samples: int = 1,
                 num_sequences: int = 0, max_length: int = 0, select_samples: int = 100, lr_halvings: int = 0):
        super().__init__(model, WarmStartedSviLoss())
        if init not in INITS:
            raise ValueError(f"unknown per-sequence init {init!r}; valid choices: {', '.join(INITS)}")
        if steps_per_update < 0:
            raise ValueError(f"per-sequence training needs steps_per_update >= 0, got {steps_per_update}")
        self.fit = OptimumSettings(lr=lr, n_samples=n_samples, window=window, patience=patience, max_steps=max_steps,
                                   select_samples=select_samples, lr_halvings=lr_halvings)
        self.train_refine = RefineSettings(steps=steps_per_update, lr=train_lr, optimizer="adam", clip=None,
                                           n_samples=train_samples)
        self.init = init
        # lambda per stored sequence for warm starts (grown on demand; NaN marks "never seen")
        self.register_buffer("store", torch.full((num_sequences, max_length, 2 * model.z_dim), float("nan")))

    def amortized_part(self):
        return None

    def initial_params(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        p = next(model.parameters())
        if self.init == "prior":
            with torch.no_grad():
                ro = rollout(model, None, batch)
            return local_params(ro)
        return p.new_zeros(batch.batch_size, batch.length, 2 * self.z_dim)   # mu = 0, log sigma = 0

    def optimize(self, model: SequenceModel, batch: SequenceBatch,
                 lam0: torch.Tensor | None = None) -> tuple[torch.Tensor, OptimumReport]:
        """(q*, report): optimum.optimize from lam0 (default: the init), best iterate, never below its start."""
        return optimize(model, self, batch, self.initial_params(model, batch) if lam0 is None else lam0, self.fit)

    def context(self, model: SequenceModel, batch: SequenceBatch, lam0: torch.Tensor | None = None) -> torch.Tensor:
        """q*, optimized from lam0 (default: the init) until the stopping rule fires."""
        return self.optimize(model, batch, lam0)[0]

    def _rows(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Store coordinates (sequence, step) of every step of the batch, each (B, T)."""
        steps = torch.arange(batch.length, device=batch.index.device)
        offset = batch.offset if batch.offset is not None else torch.zeros_like(batch.index)
        return batch.index[:, None].expand(-1, batch.length), offset[:, None] + steps

    def stored(self, model: SequenceModel, batch: SequenceBatch) -> torch.Tensor:
        """The kept lambda (B, T, 2 Dz) of the batch's steps; the init where a step was never seen."""
        seq, step = self._rows(batch)
        need_n, need_t = int(seq.max()) + 1, int(step.max()) + 1
        if need_n > self.store.shape[0] or need_t > self.store.shape[1]:
            grown = self.store.new_full((max(need_n, self.store.shape[0]), max(need_t, self.store.shape[1]),
                                         self.store.shape[2]), float("nan"))
            grown[: self.store.shape[0], : self.store.shape[1]] = self.store
            self.store = grown
        lam = self.store[seq, step]
        return torch.where(torch.isnan(lam), self.initial_params(model, batch), lam)

    def remember(self, batch: SequenceBatch, lam: torch.Tensor):
        """Keep lambda (B, T, 2 Dz) of the batch's steps for the next warm start."""
        self.store[self._rows(batch)] = lam.detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """The store grows during training: take the saved size before loading."""
        saved = state_dict.get(prefix + "store")
        if saved is not None:
            self.store = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
