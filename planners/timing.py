"""Wall-clock cost of one planning decision, for benchmark scripts."""
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
