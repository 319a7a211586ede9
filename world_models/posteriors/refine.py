"""Gradient refinement of local variational parameters lambda = (mu, log sigma) on the sequence ELBO.

    lambda^{k+1} = lambda^k + update(grad_lambda ELBO(lambda^k))

with SGD + momentum (Kim et al. 2018) or Adam (Krishnan et al. 2018), each sequence clipped to a
gradient norm. The optimizer is written out functionally so that the `unrolled` variant can
backpropagate through every step (create_graph=True); the detached variant cuts the graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..base import SequenceBatch, SequenceModel
from ..rollout import Rollout, rollout

OPTIMIZERS = ("adam", "sgd")


@dataclass
class RefineSettings:
    steps: int = 20
    lr: float = 0.01
    optimizer: str = "adam"
    momentum: float = 0.5          # sgd only
    betas: tuple = (0.9, 0.999)    # adam only
    clip: float | None = 5.0       # max gradient norm per sequence per step (None: no clipping)
    n_samples: int = 1             # Monte Carlo samples per ELBO gradient

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown refinement optimizer {self.optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}")
        if int(self.steps) != self.steps or self.steps < 0:
            raise ValueError(f"refinement steps K must be an integer >= 0, got {self.steps}")
        if self.lr <= 0 or self.n_samples < 1:
            raise ValueError(f"refinement needs lr > 0 and n_samples >= 1, got lr={self.lr}, n_samples={self.n_samples}")


def sequence_elbo(model: SequenceModel, local, batch: SequenceBatch, lam: torch.Tensor, n_samples: int,
                  per_step: Callable[[Rollout], torch.Tensor] | None = None) -> torch.Tensor:
    """ELBO(lambda) per sequence (B,), Monte Carlo over n_samples, KL in closed form per step; per_step(rollout)
    (N, T) replaces the ELBO's per-step terms log p(x_t | .) - KL_t (e.g. the training objective's, free nats
    included)."""
    ro = rollout(model, local, batch, lam, n_samples)
    return (ro.elbo if per_step is None else per_step(ro)).sum(1).reshape(n_samples, -1).mean(0)


class FunctionalOptimizer:
    """Gradient *ascent* on lambda, pure tensor ops (differentiable when the gradients are)."""

    def __init__(self, s: RefineSettings, lam: torch.Tensor):
        self.s, self.k = s, 0
        self.m = torch.zeros_like(lam)
        self.v = torch.zeros_like(lam)

    def update(self, lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        s = self.s
        if s.clip is not None:  # per-sequence norm over (T, 2 Dz)
            norm = g.flatten(1).norm(dim=1).clamp(min=1e-12)
            g = g * (s.clip / norm).clamp(max=1.0).view(-1, *([1] * (g.dim() - 1)))
        self.k += 1
        if s.optimizer == "sgd":   # v = mu v + g;  lambda += lr v
            self.m = s.momentum * self.m + g
            return lam + s.lr * self.m
        b1, b2 = s.betas           # Adam with bias correction
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        m_hat, v_hat = self.m / (1 - b1 ** self.k), self.v / (1 - b2 ** self.k)
        return lam + s.lr * m_hat / (v_hat.sqrt() + 1e-8)


def refine(model: SequenceModel, local, batch: SequenceBatch, lam0: torch.Tensor, s: RefineSettings,
           unrolled: bool = False, on_step: Callable[[int, torch.Tensor], None] | None = None,
           per_step: Callable[[Rollout], torch.Tensor] | None = None) -> torch.Tensor:
    """K steps of ELBO ascent from the context lam0, moving only its free part (local.split). unrolled:
    the result stays a differentiable function of lam0 and the model (second-order terms included);
    otherwise it is detached from both. on_step(k, context after step k, detached) is called after each step.
    per_step: ascend the sum over steps of per_step(rollout) instead of the ELBO (sequence_elbo)."""
    fixed, lam = local.split(lam0 if unrolled else lam0.detach())
    context = (lambda free: free) if fixed.shape[-1] == 0 else (lambda free: torch.cat([fixed, free], -1))
    opt = FunctionalOptimizer(s, lam)
    for _ in range(s.steps):
        if not unrolled:
            lam = lam.detach().requires_grad_(True)
        with torch.enable_grad():
            elbo = sequence_elbo(model, local, batch, context(lam), s.n_samples, per_step).sum()
            (g,) = torch.autograd.grad(elbo, lam, create_graph=unrolled)
        lam = opt.update(lam, g)
        if on_step is not None:
            on_step(opt.k, context(lam.detach()))
    return context(lam) if unrolled else context(lam.detach())
