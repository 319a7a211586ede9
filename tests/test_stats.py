import itertools
import warnings

import numpy as np
import pytest

from analysis.stats import (bootstrap_ci, iqm, mean_t_interval, probability_of_improvement,
                            probability_of_improvement_ci, smallest_rank_test_p, spearman, spearman_ci,
                            stratified_bootstrap_ci, welch_interval)


def test_iqm_hand_computed():
    # n = 8: sorted 1 2 | 3 5 7 8 | 10 100, two values trimmed from each end
    assert iqm([10, 1, 7, 3, 100, 5, 2, 8]) == pytest.approx((3 + 5 + 7 + 8) / 4)
    # n = 10: floor(10 / 4) = 2 trimmed from each end, no fractional weights: mean of 3..8
    assert iqm([1000, 9, 1, 8, 2, 7, 3, 6, 4, 5]) == pytest.approx(5.5)
    # n = 5: one trimmed from each end
    assert iqm([50, 1, 4, 2, 3]) == pytest.approx(3.0)
    # n = 3: nothing trimmed
    assert iqm([1, 2, 30]) == pytest.approx(11.0)


def test_iqm_matches_scipy_trim_mean_and_reduces_an_axis():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in range(1, 23):
        x = rng.standard_cauchy(n)
        assert iqm(x) == pytest.approx(stats.trim_mean(x, 0.25))
    x = rng.normal(size=(4, 7))
    np.testing.assert_allclose(iqm(x, axis=-1), [iqm(row) for row in x])
    np.testing.assert_allclose(iqm(x, axis=0), [iqm(col) for col in x.T])


def test_iqm_of_symmetric_data_is_the_mean():
    deviations = np.array([0.3, 1.0, 2.5, 7.0, 40.0])
    x = 3.0 + np.concatenate([deviations, -deviations])
    assert iqm(x) == pytest.approx(np.mean(x)) == pytest.approx(3.0)


def test_bad_samples_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        iqm([])
    with pytest.raises(ValueError, match="non-finite"):
        iqm([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], np.mean, level=95, rng=np.random.default_rng(0))


def test_bootstrap_ci_coverage_of_the_mean():
    # The percentile bootstrap of a normal mean covers with probability about P(|t_{n-1}| < z sqrt((n-1)/n)):
    # 0.942 for a 95% interval at n = 50 (0.890 for a 90% one, 0.5 for a 50% one). Over 1000 replications the
    # standard error of the observed rate is 0.0074, so [0.92, 0.965] is about +-3 standard errors: a 90% interval,
    # a 50% one or the min-max of the resamples would fall outside it.
    rng = np.random.default_rng(12345)
    n, reps, true_mean = 50, 1000, 2.0
    hits = 0
    for _ in range(reps):
        x = rng.normal(true_mean, 3.0, size=n)
        low, high = bootstrap_ci(x, np.mean, n_boot=2000, level=0.95, rng=rng)
        assert low < np.mean(x) < high
        hits += low <= true_mean <= high
    assert 0.92 <= hits / reps <= 0.965


def test_bootstrap_is_deterministic_given_the_generator():
    x = np.random.default_rng(1).normal(size=10)
    a = bootstrap_ci(x, iqm, rng=np.random.default_rng(7))
    assert a == bootstrap_ci(x, iqm, rng=np.random.default_rng(7))
    assert a != bootstrap_ci(x, iqm, rng=np.random.default_rng(8))


def test_stratified_bootstrap_resamples_within_groups():
    # Each group is constant, so resampling within groups always reproduces the pooled mean exactly,
    # while resampling the pooled runs does not.
    groups = {"easy": np.full(5, 10.0), "hard": np.zeros(5)}
    assert stratified_bootstrap_ci(groups, np.mean, rng=np.random.default_rng(0)) == (5.0, 5.0)
    low, high = bootstrap_ci(np.concatenate(list(groups.values())), np.mean, rng=np.random.default_rng(0))
    assert low < 5.0 < high
    # unequal group sizes: the pooled mean of 3 tens and 1 zero
    assert stratified_bootstrap_ci({"a": [10.0] * 3, "b": [0.0]}, np.mean,
                                   rng=np.random.default_rng(0)) == (7.5, 7.5)


def test_probability_of_improvement_hand_computed():
    # task a: x = (3, 1) against y = (2, 2): pairs 3>2, 3>2, 1<2, 1<2 -> 1/2; task b: x = (5,) against y = (5, 0):
    # one tie (1/2) and one win -> 3/4; mean over tasks 5/8
    x, y = {"a": [3.0, 1.0], "b": [5.0]}, {"a": [2.0, 2.0], "b": [5.0, 0.0]}
    assert probability_of_improvement(x, y) == pytest.approx(5 / 8)
    assert probability_of_improvement(y, x) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement({"a": [1.0]}, {"b": [1.0]})


def test_smallest_rank_test_p_is_that_of_an_enumerated_permutation_test():
    """Independent reference: enumerate every relabelling of the runs within each task, and take the two-sided
    p-value of the observed P(X > Y) where every x is above every y (the most extreme data)."""
    for sizes in ([(2, 3)], [(3, 3)], [(4, 4)], [(2, 3), (2, 2)]):
        tasks = {f"t{m}": (np.arange(n + k, dtype=float), n) for m, (n, k) in enumerate(sizes)}
        relabellings = itertools.product(*[itertools.combinations(range(n + k), n) for n, k in sizes])
        null = []
        for chosen in relabellings:
            x = {t: v[list(c)] for (t, (v, _)), c in zip(tasks.items(), chosen)}
            y = {t: np.delete(v, list(c)) for (t, (v, _)), c in zip(tasks.items(), chosen)}
            null.append(probability_of_improvement(x, y))
        null = np.array(null)
        one_sided = float((null >= 1.0).mean())       # the observed statistic at complete separation is 1
        assert smallest_rank_test_p(sizes) == pytest.approx(min(1.0, 2 * one_sided))
    assert smallest_rank_test_p([(3, 3)]) == pytest.approx(0.1)      # the 3 vs 3 runs
    assert smallest_rank_test_p([(4, 4)]) < 0.05 < smallest_rank_test_p([(3, 4)])


def test_spearman_matches_scipy_with_ties_and_its_interval_covers_it():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=20), 1)
    y = np.round(x + rng.normal(size=20), 1)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert spearman(x, -x) == pytest.approx(-1.0)
    low, high = spearman_ci(x, y, rng=rng)
    assert -1 <= low < spearman(x, y) < high <= 1
    with pytest.raises(ValueError, match="equal length"):
        spearman_ci([1.0, 2.0], [1.0, 2.0], rng=rng)


def test_iqm_probability_of_improvement_and_their_intervals_compute_what_rliable_computes():
    """Rectangular data (runs x tasks) with tasks of very different scale, where resampling the pooled runs instead
    of the runs within each task would give a much wider IQM interval: point estimates exactly, percentile intervals
    within the Monte Carlo error of 4000 resamples (observed: 0.01 and 3% of the width at 10000)."""
    from rliable import library, metrics
    rng = np.random.default_rng(11)
    offsets = np.array([0.0, 5.0, 10.0, 20.0])
    X, Y = rng.normal(1, 1, (5, 4)) + offsets, rng.normal(0.5, 1, (5, 4)) + offsets
    by_task = lambda a: {m: a[:, m] for m in range(a.shape[1])}
    assert iqm(X.ravel()) == pytest.approx(metrics.aggregate_iqm(X))
    assert probability_of_improvement(by_task(X), by_task(Y)) == pytest.approx(metrics.probability_of_improvement(X, Y))
    reps = 4000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # arch's deprecation of RandomState
        _, their_iqm = library.get_interval_estimates(
            {"x": X}, lambda a: np.array([metrics.aggregate_iqm(a)]), reps=reps, random_state=np.random.RandomState(0))
        _, their_poi = library.get_interval_estimates(
            {"xy": [X, Y]}, lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), reps=reps,
            random_state=np.random.RandomState(1))
    ours = np.array(stratified_bootstrap_ci(by_task(X), iqm, reps, rng=rng))
    width = ours[1] - ours[0]
    assert np.abs(ours - their_iqm["x"][:, 0]).max() < 0.08 * width
    unstratified = np.array(bootstrap_ci(X.ravel(), iqm, reps, rng=rng))
    assert unstratified[1] - unstratified[0] > 2 * width          # the check above can tell the two apart
    poi = np.array(probability_of_improvement_ci(by_task(X), by_task(Y), reps, rng=rng))
    assert np.abs(poi - their_poi["xy"][:, 0]).max() <= 0.03


def test_welch_interval_hand_computed_and_covering_at_its_level_with_unequal_groups():
    """x = [1, 2, 3], y = [0, 0, 1, 1]: d = 1.5, se^2 = 1/3 + 1/12, nu = (5/12)^2 / ((1/3)^2/2 + (1/12)^2/3) = 3,
    t_{0.975, 3} = 3.1824 (from a table). Swapping the groups negates it. Coverage of the true difference 0 over
    10000 pairs of groups: 5 and 5 N(0, 1) values, within 1 point of 95%; 3 N(0, 2^2) and 5 N(0, 0.5^2) values (the
    hard case: the small group dominates se), at least 92% (93.4% measured). A percentile bootstrap of the
    difference covered 88% and 74% of the same two cases (session 19), why the report uses Welch's interval."""
    low, high = welch_interval([1.0, 2.0, 3.0], [0.0, 0.0, 1.0, 1.0])
    half = 3.182446 * np.sqrt(5 / 12)
    assert (low, high) == pytest.approx((1.5 - half, 1.5 + half), abs=2e-4)
    assert welch_interval([0.0, 0.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == pytest.approx((-high, -low))
    assert welch_interval([2.0, 2.0], [1.0, 1.0, 1.0]) == (1.0, 1.0)
    rng = np.random.default_rng(3)
    coverage = lambda xs, ys: np.mean([lo < 0 < hi for lo, hi in map(welch_interval, xs, ys)])
    assert abs(coverage(rng.normal(0, 1.0, size=(10000, 5)), rng.normal(0, 1.0, size=(10000, 5))) - 0.95) < 0.01
    assert coverage(rng.normal(0, 2.0, size=(10000, 3)), rng.normal(0, 0.5, size=(10000, 5))) >= 0.92
    with pytest.raises(ValueError, match="needs >= 2 values per group"):
        welch_interval([1.0], [1.0, 2.0])


def test_t_interval_covers_the_mean_at_its_level_where_the_bootstrap_does_not():
    """Over 20000 samples of 3 standard normals the 95% t interval covers the true mean 0 about 95% of the time (the
    percentile bootstrap of such samples covers it about 75%, P(|t_2| < 1.96 sqrt(2/3)): why the seed tables use the
    t interval); the interval of [1, 2, 3, 4] is 2.5 -+ 3.1824 * 0.6455 (t_{0.975, 3} from a table)."""
    low, high = mean_t_interval([1.0, 2.0, 3.0, 4.0])
    assert (low, high) == pytest.approx((2.5 - 3.182446 * np.sqrt(5 / 3) / 2, 2.5 + 3.182446 * np.sqrt(5 / 3) / 2))
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((20000, 3))
    covered = np.mean([lo < 0 < hi for lo, hi in map(mean_t_interval, samples)])
    assert abs(covered - 0.95) < 0.006
    boot = np.mean([lo < 0 < hi for lo, hi in (bootstrap_ci(x, np.mean, 200, rng=rng) for x in samples[:2000])])
    assert boot < 0.88
    with pytest.raises(ValueError, match="needs >= 2 values"):
        mean_t_interval([1.0])
