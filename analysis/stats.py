"""Statistics for comparing runs over seeds, after rliable (Agarwal et al. 2021, "Deep reinforcement learning at the
edge of the statistical precipice"): the interquartile mean and percentile-bootstrap confidence intervals, plain or
stratified by task, the probability of improvement with its stratified-bootstrap interval, Spearman's rank
correlation with a bootstrap interval over runs. tests/test_stats.py checks the first three against rliable itself.
For one group's mean over a handful of seeds, the Student-t interval, and for the difference of two groups' means,
Welch's interval: percentile bootstraps of means over 2-5 seeds are too narrow.

A statistic here is a function `statistic(samples, axis=-1)` that reduces the last axis (np.mean, np.median, iqm), so
that all bootstrap resamples are scored in one vectorized call.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
from scipy import stats as scipy_stats

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
    _check_bootstrap(n_boot, level)
    if not groups:
        raise ValueError("no groups to bootstrap")
    resamples = []
    for name, x in groups.items():
        x = _one_dimensional(x, f"bootstrap group {name!r}")
        resamples.append(x[rng.integers(0, len(x), size=(n_boot, len(x)))])
    return _percentile_interval(statistic(np.concatenate(resamples, axis=1), axis=-1), level)


def _percentile_interval(thetas: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(thetas, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _check_bootstrap(n_boot: int, level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 of the runs x (..., n) against y (..., m): the Mann-Whitney U statistic / (n m)."""
    d = x[..., :, None] - y[..., None, :]
    return (d > 0).mean((-2, -1)) + 0.5 * (d == 0).mean((-2, -1))


def probability_of_improvement(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray]) -> float:
    """P(X > Y) averaged over tasks (rliable's definition): for each task m, with X's runs x_1..x_n and Y's runs
    y_1..y_k there, P_m = (1 / (n k)) sum_ij [1(x_i > y_j) + 1(x_i = y_j) / 2]; the result is the mean of P_m over
    the tasks, which x and y must share (a task is a dict key; runs may differ in number)."""
    return float(np.mean([_improvement(*_pair(x, y, task)) for task in _tasks(x, y)]))


def smallest_rank_test_p(sizes: list[tuple[int, int]]) -> float:
    """The smallest two-sided p-value an exact rank (permutation) test of X against Y can reach with (n_m, k_m) runs
    in each task m, labels permuted within tasks: the most extreme arrangement (every x above every y in every task)
    has probability 1 / prod_m C(n_m + k_m, n_m), doubled for two sides. Where it is not below 1 - level, no interval
    of P(X > Y) at these sizes can honestly exclude 0.5, whatever a bootstrap says (at complete separation the
    percentile bootstrap collapses to a point)."""
    return min(1.0, 2 / math.prod(math.comb(n + k, n) for n, k in sizes))


def probability_of_improvement_ci(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], n_boot: int = 2000,
                                  level: float = 0.95, *, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile-bootstrap interval of probability_of_improvement(x, y), resampling each algorithm's runs within
    each task independently (stratified, as rliable does). Deterministic given `rng`."""
    _check_bootstrap(n_boot, level)
    per_task = []
    for task in _tasks(x, y):
        a, b = _pair(x, y, task)
        per_task.append(_improvement(a[rng.integers(0, len(a), size=(n_boot, len(a)))],
                                     b[rng.integers(0, len(b), size=(n_boot, len(b)))]))
    return _percentile_interval(np.mean(per_task, axis=0), level)


def mean_t_interval(x, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of n >= 2 independent values: mean -+ t_{(1+level)/2, n-1} * s / sqrt(n),
    s = std(ddof=1). Exact for normal values; over 2-5 seeds far closer to `level` than a percentile bootstrap."""
    x = _one_dimensional(x, "t interval")
    if len(x) < 2 or not 0 < level < 1:
        raise ValueError(f"t interval: needs >= 2 values and 0 < level < 1, got {len(x)} values, level {level}")
    half = scipy_stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def welch_interval(x, y, level: float = 0.95) -> tuple[float, float]:
    """Welch's interval of mean(x) - mean(y) for two independent groups of n, m >= 2 runs with unequal variances:
    d -+ t_{(1+level)/2, nu} * se, se^2 = s_x^2 / n + s_y^2 / m, nu = se^4 / ((s_x^2/n)^2/(n-1) + (s_y^2/m)^2/(m-1))
    (Welch-Satterthwaite); [d, d] where both groups are constant. Over 3-5 seeds per group it covers close to
    `level`, where a percentile bootstrap of the difference covers far less."""
    x, y = _one_dimensional(x, "welch x"), _one_dimensional(y, "welch y")
    if min(len(x), len(y)) < 2 or not 0 < level < 1:
        raise ValueError(f"welch interval: needs >= 2 values per group and 0 < level < 1, got {len(x)} and "
                         f"{len(y)} values, level {level}")
    d = float(x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    if vx + vy == 0:
        return d, d
    nu = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    half = float(scipy_stats.t.ppf((1 + level) / 2, nu) * np.sqrt(vx + vy))
    return d - half, d + half


def _tasks(x: Mapping, y: Mapping) -> list:
    if set(x) != set(y) or not x:
        raise ValueError(f"probability of improvement needs runs of both algorithms on the same tasks; got "
                         f"{sorted(x)} and {sorted(y)}")
    return sorted(x)


def _pair(x: Mapping, y: Mapping, task) -> tuple[np.ndarray, np.ndarray]:
    return tuple(_one_dimensional(d[task], f"task {task!r}") for d in (x, y))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given their average rank."""
    below = (x[..., None, :] < x[..., :, None]).sum(-1)
    ties = (x[..., None, :] == x[..., :, None]).sum(-1)
    return below + (ties + 1) / 2


def spearman(x, y) -> np.ndarray:
    """Spearman's rank correlation of paired samples along the last axis: the Pearson correlation of their ranks,
    rho = cov(r(x), r(y)) / (sd(r(x)) sd(r(y))); nan where either sample is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))


def spearman_ci(x, y, n_boot: int = 2000, level: float = 0.95, *, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile-bootstrap interval of spearman(x, y), resampling the (x_i, y_i) pairs (runs) with replacement;
    resamples whose ranks are constant (no correlation defined) are left out."""
    _check_bootstrap(n_boot, level)
    x, y = _one_dimensional(x, "spearman x"), _one_dimensional(y, "spearman y")
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"spearman needs paired samples of equal length >= 3, got {len(x)} and {len(y)}")
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    rho = spearman(x[idx], y[idx])
    if not np.isfinite(rho).any():
        raise ValueError("spearman_ci: every resample has constant ranks (too few distinct values)")
    return _percentile_interval(rho[np.isfinite(rho)], level)


def _one_dimensional(x, what: str) -> np.ndarray:
    x = _finite(x, what)
    if x.ndim != 1:
        raise ValueError(f"{what} must be 1-D (one value per run), got shape {x.shape}")
    return x


def _finite(x, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        raise ValueError(f"{what}: empty sample")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: sample has non-finite values: {x}")
    return x
