"""What a planning decision costs, for benchmark scripts: its wall-clock, and the sequences it evaluates."""
from __future__ import annotations

import statistics
import time
from typing import Optional

import torch

from .base import Objective


def time_decision(planner, objective: Objective, action_dim: int, repeats: int = 3, warmup: int = 1,
                  generator: Optional[torch.Generator] = None) -> float:
    """Median seconds of planner.plan(objective, action_dim) over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        planner.plan(objective, action_dim, generator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        planner.plan(objective, action_dim, generator)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class CountingPlanner:
    """Plans exactly as `planner` does, counting the decisions and the sequences its objective evaluated."""

    def __init__(self, planner):
        self.planner, self.sequences, self.decisions = planner, 0, 0

    @property
    def settings(self):
        return self.planner.settings

    def reset(self) -> None:
        self.planner.reset()

    def plan(self, objective: Objective, action_dim: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        def counted(actions: torch.Tensor) -> torch.Tensor:
            self.sequences += actions.shape[0]
            return objective(actions)
        self.decisions += 1
        return self.planner.plan(counted, action_dim, generator)
