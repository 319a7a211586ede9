"""Random shooting, the baseline without refinement:

    a^(n) ~ U([low, high]^{H x A}),  n = 1..N;   n* = argmax_n J(a^(n));   take a^(n*)_1
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .base import Objective, check_common, check_positive_int, evaluate, sample_device


@dataclass(frozen=True)
class RandomShootingSettings:
    horizon: int = 12
    candidates: int = 10000
    action_low: float = -1.0
    action_high: float = 1.0

    def __post_init__(self):
        check_common(self.horizon, self.candidates, self.action_low, self.action_high)


# Same number of evaluated sequences per decision as the CEM presets of the same name (candidates x iterations).
PRESETS = {"planet": RandomShootingSettings(),
           "cpu": RandomShootingSettings(horizon=12, candidates=1500)}


class RandomShootingPlanner:
    """plan() returns the first action of the best candidate; the best sequence (H, A) and its return
    stay in .best and .best_return (None before the first plan)."""

    def __init__(self, settings: RandomShootingSettings = PRESETS["planet"]):
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """Forget the last decision's best sequence (every decision starts afresh)."""
        self.best: Optional[torch.Tensor] = None
        self.best_return: Optional[float] = None

    @torch.no_grad()
    def plan(self, objective: Objective, action_dim: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        s = self.settings
        check_positive_int("action_dim", action_dim)
        u = torch.rand((s.candidates, s.horizon, action_dim), generator=generator, device=sample_device(generator))
        actions = s.action_low + (s.action_high - s.action_low) * u
        returns = evaluate(objective, actions)
        i = int(returns.argmax())
        self.best, self.best_return = actions[i], float(returns[i])
        return actions[i, 0]
