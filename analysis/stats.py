"""Statistics for comparing runs over seeds, after rliable (Agarwal et al. 2021, "Deep reinforcement learning at the
edge of the statistical precipice"): the interquartile mean and percentile-bootstrap confidence intervals, plain or
stratified by task.

A statistic here is a function `statistic(samples, axis=-1)` that reduces the last axis (np.mean, np.median, iqm), so
that all bootstrap resamples are scored in one vectorized call.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

Statistic = Callable[..., np.ndarray]


def iqm(x, axis: int = -1):
    """Interquartile mean along `axis`, exactly as rliable computes it (scipy.stats.trim_mean(x, 0.25)).

    With the order statistics x_(1) <= ... <= x_(n) and g = floor(n / 4):
        IQM = mean(x_(g+1), ..., x_(n-g)),
    i.e. whole values are trimmed from each end, with no fractional weights at the boundaries, so for n < 4 the IQM
    is the mean and for n = 10 it is the mean of the middle 6 values."""
    x = np.sort(_finite(x, "iqm"), axis=axis)
    n = x.shape[axis]
    g = n // 4
    return np.take(x, np.arange(g, n - g), axis=axis).mean(axis=axis)


def bootstrap_ci(x, statistic: Statistic, n_boot: int = 2000, level: float = 0.95, *,
                 rng: np.random.Generator) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of statistic(x) over the runs in the 1-D array x."""
    return stratified_bootstrap_ci({"runs": x}, statistic, n_boot, level, rng=rng)


def stratified_bootstrap_ci(groups: Mapping[str, np.ndarray], statistic: Statistic, n_boot: int = 2000,
                            level: float = 0.95, *, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the statistic of all groups' runs pooled, resampling runs within
    each group (rliable's stratified bootstrap: every resample keeps each task's number of runs).

    Resample b = 1..B: for each group with runs x_1..x_n draw n of them uniformly with replacement;
    theta*_b = statistic(all groups' resampled runs, concatenated). The interval is the (1 - level)/2 and
    (1 + level)/2 quantiles of theta*_1..theta*_B. Deterministic given `rng`."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not groups:
        raise ValueError("no groups to bootstrap")
    resamples = []
    for name, x in groups.items():
        x = _finite(x, f"bootstrap group {name!r}")
        if x.ndim != 1:
            raise ValueError(f"bootstrap group {name!r} must be 1-D (one value per run), got shape {x.shape}")
        resamples.append(x[rng.integers(0, len(x), size=(n_boot, len(x)))])
    thetas = statistic(np.concatenate(resamples, axis=1), axis=-1)
    low, high = np.quantile(thetas, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _finite(x, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        raise ValueError(f"{what}: empty sample")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: sample has non-finite values: {x}")
    return x
