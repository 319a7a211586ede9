"""Per-sequence (non-amortized) posterior: no encoder; lambda optimized for each sequence.

Evaluation (`context`) finds Cremer et al.'s q*: initialize (at N(0, I), or along a rollout of
the prior), then Adam on the ELBO with `n_samples` samples per step, averaging the ELBO over
windows of `window` steps and stopping after `patience` windows without improvement or at
`max_steps` (the fixed budget). The stopping rule is applied to the batch mean. The result is the
average of the iterates over the last full window (Polyak averaging), which removes most of the
Monte Carlo jitter of the final iterate.
For joint model learning, `training_loss` keeps lambda for every stored sequence (by
`batch.index`), warm-starts from it, takes `steps_per_update` steps and writes it back.
Family: mean-field Gaussian across time, diagonal per step.
Cost per optimizer step: one model rollout forward and backward with n_samples samples.
"""
from __future__ import annotations

import torch

from ..base import SequenceBatch, SequenceModel
from ..rollout import rollout
from .base import LocalGaussian, Objective, local_params, metrics, negative_elbo
from .refine import FunctionalOptimizer, RefineSettings, refine, sequence_elbo

INITS = ("standard_normal", "prior")


class PerSequencePosterior(LocalGaussian):
    has_encoder = False
    default_decision_steps = 3     # its belief is optimized at every decision (over the last decision_window steps)
    step_cost = "per optimizer step: one model rollout forward + backward with n_samples samples"

    def __init__(self, model: SequenceModel, lr: float = 1e-3, n_samples: int = 50, window: int = 100,
                 patience: int = 10, max_steps: int = 5000, init: str = "standard_normal",
                 steps_per_update: int = 10, train_lr: float = 0.05, train_samples: int = 1,
                 num_sequences: int = 0, max_length: int = 0):
        super().__init__(model)
        if init not in INITS:
            raise ValueError(f"unknown per-sequence init {init!r}; valid choices: {', '.join(INITS)}")
        if min(window, patience, max_steps) < 1 or steps_per_update < 0:
            raise ValueError("per-sequence settings need window, patience, max_steps >= 1 and steps_per_update >= 0")
        self.fit = RefineSettings(steps=1, lr=lr, optimizer="adam", clip=None, n_samples=n_samples)
        self.train_refine = RefineSettings(steps=steps_per_update, lr=train_lr, optimizer="adam", clip=None,
                                           n_samples=train_samples)
        self.window, self.patience, self.max_steps, self.init = window, patience, max_steps, init
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

    def context(self, model: SequenceModel, batch: SequenceBatch, lam0: torch.Tensor | None = None,
                trace: list | None = None) -> torch.Tensor:
        """q*: optimize from lam0 (default: the init) until the stopping rule fires. If `trace` is
        a list, the windowed mean ELBO per sequence step is appended to it."""
        lam = (self.initial_params(model, batch) if lam0 is None else lam0).detach()
        opt = FunctionalOptimizer(self.fit, lam)
        best, stale, window_sum = -float("inf"), 0, 0.0
        lam_sum, lam_avg = torch.zeros_like(lam), None
        for k in range(1, self.max_steps + 1):
            lam = lam.detach().requires_grad_(True)
            with torch.enable_grad():
                elbo = sequence_elbo(model, self, batch, lam, self.fit.n_samples)
                (g,) = torch.autograd.grad(elbo.sum(), lam)
            lam = opt.update(lam, g).detach()
            window_sum += float(elbo.detach().mean())
            lam_sum += lam
            if k % self.window == 0:
                avg = window_sum / self.window
                lam_avg, lam_sum, window_sum = lam_sum / self.window, torch.zeros_like(lam), 0.0
                if trace is not None:
                    trace.append(avg / batch.length)
                stale = 0 if avg > best else stale + 1
                best = max(best, avg)
                if stale >= self.patience:
                    break
        return lam if lam_avg is None else lam_avg

    def _rows(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Store coordinates (sequence, step) of every step of the batch, each (B, T)."""
        steps = torch.arange(batch.length, device=batch.index.device)
        offset = batch.offset if batch.offset is not None else torch.zeros_like(batch.index)
        return batch.index[:, None].expand(-1, batch.length), offset[:, None] + steps

    def _stored(self, model, batch) -> torch.Tensor:
        seq, step = self._rows(batch)
        need_n, need_t = int(seq.max()) + 1, int(step.max()) + 1
        if need_n > self.store.shape[0] or need_t > self.store.shape[1]:
            grown = self.store.new_full((max(need_n, self.store.shape[0]), max(need_t, self.store.shape[1]),
                                         self.store.shape[2]), float("nan"))
            grown[: self.store.shape[0], : self.store.shape[1]] = self.store
            self.store = grown
        lam = self.store[seq, step]
        return torch.where(torch.isnan(lam), self.initial_params(model, batch), lam)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """The store grows during training: take the saved size before loading."""
        saved = state_dict.get(prefix + "store")
        if saved is not None:
            self.store = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def training_loss(self, model: SequenceModel, batch: SequenceBatch, objective: Objective):
        """Warm-started SVI: lambda from the store, steps_per_update steps, model learns at the result."""
        if batch.index is None:
            raise ValueError("per_sequence training keeps parameters per stored sequence and needs batch.index")
        lam = refine(model, self, batch, self._stored(model, batch), self.train_refine)
        self.store[self._rows(batch)] = lam
        ro = rollout(model, self, batch, lam, objective.n_samples)
        return negative_elbo(ro, objective), metrics(ro)

