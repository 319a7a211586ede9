"""The per-sequence optimum q* of a posterior's local parameters: Adam on the ELBO to convergence, keeping the
best iterate (docs/definitions.md section 2).

    lambda* = argmax_lambda ELBO(lambda), over the free part of a context (local.split), from lambda^0

Run on a LocalGaussian `local` from any start lambda^0, q* lies in local's family: per_sequence's mean-field
family from N(0, I), or an encoder's family with free per-step offsets from the encoder's own output (offset 0
= the encoder), which is the family that contains that encoder. The rule that makes an amortization gap
L[q*] - L[q_phi] >= 0 by construction:
- every `window` steps the ELBO of the window's iterates is averaged per sequence; a sequence keeps the average
  of the iterates of its best window (Polyak averaging, which removes most of the Monte Carlo jitter);
- after `patience` windows without improvement of the batch mean, halve the step size and continue from the kept
  averages, `lr_halvings` times; then stop (or at `max_steps`);
- at the end, the start and the kept candidate are compared per sequence with `select_samples`-sample ELBOs,
  and the better is returned: q* is never worse than where it started (up to that comparison's noise).
Cost per step: one model rollout forward and backward with n_samples samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..base import SequenceBatch, SequenceModel
from .refine import FunctionalOptimizer, RefineSettings, sequence_elbo


# the stopping rule of the gap decomposition's q* (analysis.decompose, the toy experiment's per_sequence method)
WINDOW, PATIENCE = 50, 5


@dataclass
class OptimumSettings:
    lr: float = 0.05
    n_samples: int = 20          # samples per optimizer step
    window: int = WINDOW         # steps per averaging / stopping window
    patience: int = PATIENCE     # windows without improvement before stopping
    max_steps: int = 1500        # step budget
    select_samples: int = 100    # samples of the final start-versus-candidate comparison
    lr_halvings: int = 0         # plateaus met by halving the step size (from the kept averages) before stopping

    def __post_init__(self):
        if min(self.window, self.patience, self.max_steps, self.n_samples, self.select_samples) < 1 or self.lr <= 0 \
                or self.lr_halvings < 0:
            raise ValueError(f"q* settings need lr > 0, lr_halvings >= 0 and window, patience, max_steps, n_samples, "
                             f"select_samples >= 1; got {self}")


@dataclass
class OptimumReport:
    """What the optimization did: steps taken, why it stopped, the step after which the batch-mean window ELBO
    last improved, the start and result ELBOs (per step, batch mean, from the selection comparison), how many
    sequences kept their start, and the windowed mean ELBO per step (the trace)."""
    steps: int = 0
    stopped_by: str = "max_steps"
    last_improvement_step: int = 0
    start_elbo_per_step: float = float("nan")
    elbo_per_step: float = float("nan")
    kept_start: int = 0
    trace: list = field(default_factory=list)
    lr_halved_at: list = field(default_factory=list)


def optimize(model: SequenceModel, local, batch: SequenceBatch, lam0: torch.Tensor,
             s: OptimumSettings) -> tuple[torch.Tensor, OptimumReport]:
    """(lambda* (B, T, C), report): the best iterate of Adam on ELBO(lambda) from lam0, moving only its free part."""
    fixed, free = local.split(lam0.detach())
    context = (lambda f: f) if fixed.shape[-1] == 0 else (lambda f: torch.cat([fixed, f], -1))
    opt = FunctionalOptimizer(RefineSettings(steps=1, lr=s.lr, optimizer="adam", clip=None, n_samples=s.n_samples),
                              free)
    report = OptimumReport()
    B = batch.batch_size
    best_free, best_seq = free.clone(), torch.full((B,), -float("inf"), dtype=torch.float64, device=free.device)
    best_mean, stale = -float("inf"), 0
    window_elbo, window_free = torch.zeros_like(best_seq), torch.zeros_like(free)
    for k in range(1, s.max_steps + 1):
        free = free.detach().requires_grad_(True)
        with torch.enable_grad():
            elbo = sequence_elbo(model, local, batch, context(free), s.n_samples)
            (g,) = torch.autograd.grad(elbo.sum(), free)
        free = opt.update(free, g).detach()
        window_elbo += elbo.detach().double()
        window_free += free
        report.steps = k
        if k % s.window:
            continue
        avg, avg_free = window_elbo / s.window, window_free / s.window
        window_elbo, window_free = torch.zeros_like(best_seq), torch.zeros_like(free)
        better = avg > best_seq                                  # per sequence: keep its best window's average
        best_seq = torch.where(better, avg, best_seq)
        best_free = torch.where(better[:, None, None], avg_free, best_free)
        mean = float(avg.mean())
        report.trace.append(mean / batch.length)
        if mean > best_mean:
            best_mean, stale, report.last_improvement_step = mean, 0, k
        else:
            stale += 1
            if stale >= s.patience and len(report.lr_halved_at) < s.lr_halvings:
                # Adam's steps keep the iterates in a noise ball whose size scales with lr: halve it, from the kept
                # averages (closer to the optimum than the last iterate)
                opt.s, free, stale = replace(opt.s, lr=opt.s.lr / 2), best_free.clone(), 0
                report.lr_halved_at.append(k)
            elif stale >= s.patience:
                report.stopped_by = "patience"
                break
    lam_found = context(best_free)
    with torch.no_grad():                                        # never worse than the start
        start = sequence_elbo(model, local, batch, lam0.detach(), s.select_samples)
        found = sequence_elbo(model, local, batch, lam_found, s.select_samples)
    keep_start = start >= found
    report.kept_start = int(keep_start.sum())
    report.start_elbo_per_step = float(start.mean()) / batch.length
    report.elbo_per_step = float(torch.maximum(start, found).mean()) / batch.length
    return torch.where(keep_start[:, None, None], lam0.detach(), lam_found), report
