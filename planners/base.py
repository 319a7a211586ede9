"""What the planners share: the planner's and the objective's contracts, settings checks and one batched evaluation.

An objective scores action sequences: objective(actions (N, H, A)) -> returns (N,), higher is better,
all N candidates in one call.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]


class Planner(Protocol):
    """What a planner implements (cem, icem, random_shooting):

    plan(objective, action_dim, generator) -> the action to take now, a tensor (action_dim,); candidates are drawn
        from `generator` (on its device; the CPU without one), so a seeded generator makes the decision reproducible;
    reset() -> forget what earlier decisions left (warm starts); the agent calls it at the start of every episode.
    """

    def plan(self, objective: Objective, action_dim: int,
             generator: Optional[torch.Generator] = None) -> torch.Tensor: ...

    def reset(self) -> None: ...


class NonFiniteObjective(FloatingPointError):
    """The objective returned NaN (e.g. a world model whose parameters are no longer finite)."""


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_common(horizon, candidates, action_low, action_high) -> None:
    """Checks the settings every planner has."""
    check_positive_int("horizon", horizon)
    check_positive_int("candidates", candidates)
    if not float(action_low) < float(action_high):
        raise ValueError(f"action bounds need action_low < action_high, got [{action_low}, {action_high}]")


def check_elite_settings(s) -> None:
    """Checks the settings of the elite-refitting planners (cem, icem): the common ones, iterations, top_k <=
    candidates and init_std > 0."""
    check_common(s.horizon, s.candidates, s.action_low, s.action_high)
    check_positive_int("iterations", s.iterations)
    check_positive_int("top_k", s.top_k)
    if s.top_k > s.candidates:
        raise ValueError(f"top_k must be <= candidates, got top_k={s.top_k} > candidates={s.candidates}")
    if not s.init_std > 0:
        raise ValueError(f"init_std must be > 0, got {s.init_std}")


def evaluate(objective: Objective, actions: torch.Tensor) -> torch.Tensor:
    """objective(actions) as a float tensor (N,) on the actions' device; a wrong shape or NaN raises."""
    returns = objective(actions)
    if not isinstance(returns, torch.Tensor) or returns.shape != actions.shape[:1]:
        shape = tuple(returns.shape) if isinstance(returns, torch.Tensor) else type(returns).__name__
        raise ValueError(f"the objective must return a tensor of shape ({actions.shape[0]},), one return per "
                         f"candidate, got {shape}")
    if torch.isnan(returns).any():
        raise NonFiniteObjective(f"the planner's objective returned NaN for {int(torch.isnan(returns).sum())} of "
                                 f"{returns.numel()} candidates (are the world model's parameters finite?)")
    return returns.to(actions.device, torch.float32)


def sample_device(generator) -> torch.device:
    """Candidates are drawn on the generator's device (the CPU without one)."""
    return torch.device("cpu") if generator is None else generator.device
