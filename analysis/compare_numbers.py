"""The comparison's statistics (analysis/compare.py): per group of runs (task variant x inference type) the final
returns, curves, training ELBOs, gaps and calibration over its seeds, and between groups the probability of
improvement, differences of means and rank correlations, each with its interval at LEVEL."""
from __future__ import annotations

import numpy as np

from analysis.run_results import (CALIBRATION, CORRELATES, GAP_COLUMNS, MEASURES, TARGETS, Run, episode_seconds,
                                  final_value, learned_obs_std, lookup, lookup_number, metric_series)
from analysis.stats import (bootstrap_ci, iqm, mean_t_interval, probability_of_improvement,
                            probability_of_improvement_ci, smallest_rank_test_p, spearman, spearman_ci,
                            stratified_bootstrap_ci, welch_interval)

SMOOTH = 5  # train returns: trailing mean over this many episodes
# metrics.jsonl's training ELBO per step (mean over an episode's updates, on replay batches, without free nats):
# "elbo" at the posterior the model learns at (lambda^K for semi_amortized and iterative_amortized), "elbo_init" at
# the encoder's own output lambda^0 (those two only)
TRAINING_ELBOS = ("elbo", "elbo_init")
LAST = 10  # training ELBO summaries: mean over each run's last LAST episodes
LEVEL = 0.95
HORIZON_BAND_SEEDS = 3  # the calibration-by-horizon plot shades a group's interval from this many seeds


def _ci(values: np.ndarray, statistic, rng: np.random.Generator, n_boot: int):
    """The percentile-bootstrap CI over seeds as [low, high]; None for a single seed (nothing to resample)."""
    return list(bootstrap_ci(values, statistic, n_boot, LEVEL, rng=rng)) if len(values) > 1 else None


def summarize(values, rng: np.random.Generator, n_boot: int) -> dict:
    """n, mean, IQM with its bootstrap CI over seeds, median, min and max of the runs' final returns."""
    v = np.asarray(values, dtype=float)
    return {"n": len(v), "mean": float(v.mean()), "iqm": float(iqm(v)), "iqm_ci": _ci(v, iqm, rng, n_boot),
            "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


def over_seeds(values) -> dict:
    """Mean over seeds (None values left out), its standard error std(ddof=1) / sqrt(n) and its Student-t interval
    at LEVEL (both None for fewer than 2 values)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"mean": None, "sem": None, "ci": None, "n": 0}
    several = len(v) > 1
    return {"mean": float(v.mean()), "sem": float(v.std(ddof=1) / np.sqrt(len(v))) if several else None,
            "ci": list(mean_t_interval(v, LEVEL)) if several else None, "n": len(v)}


def last_mean(run: Run, key: str) -> float | None:
    """Mean of the run's last LAST values of `key`, or None where it has none."""
    values = metric_series(run, key)[1]
    return float(np.mean(values[-LAST:])) if values else None


def lowest_late(run: Run, key: str) -> float | None:
    """The lowest value of `key` in the second half of the run's episodes (a collapse late in training shows here
    when the run's last episodes have recovered), or None where it has none there."""
    episodes, values = metric_series(run, key)
    late = [v for e, v in zip(episodes, values) if e > run.rows[-1]["episode"] / 2]
    return min(late) if late else None


def refinement_gain(run: Run) -> float | None:
    """What the K refinement steps or learned updates add to the training ELBO per update that takes them, over the
    run's last LAST episodes: mean(elbo - elbo_init) / mean(refined), since an update that does not refine
    (semi_amortized refines on every k-th) reports both at lambda^0; None without elbo_init."""
    rows = [r for r in run.rows if r.get("elbo_init") is not None][-LAST:]
    if not rows:
        return None
    return float(np.mean([r["elbo"] - r["elbo_init"] for r in rows]) / np.mean([r.get("refined", 1.0) for r in rows]))


def training_elbo(runs: list[Run]) -> dict:
    """Per group: the training ELBO of its last LAST episodes at the model's posterior and at the encoder's output,
    the gain per refining update and the lowest training ELBO of the second half, each over seeds."""
    return {"elbo": over_seeds(last_mean(r, "elbo") for r in runs),
            "elbo_init": over_seeds(last_mean(r, "elbo_init") for r in runs),
            "refinement_gain": over_seeds(refinement_gain(r) for r in runs),
            "lowest_late_elbo": over_seeds(lowest_late(r, "elbo") for r in runs)}


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Along the last axis: y_t = mean(x_{t-window+1}, ..., x_t), over fewer values at the start."""
    c = np.cumsum(values, axis=-1)
    c[..., window:] = c[..., window:] - c[..., :-window]
    return c / np.minimum(np.arange(1, values.shape[-1] + 1), window)


def curve(runs: list[Run], key: str, rng: np.random.Generator, n_boot: int, smooth: int = 1) -> dict:
    """Mean over seeds of `key` at the episodes all seeds have, with a pointwise percentile-bootstrap CI."""
    series = [dict(zip(*metric_series(r, key))) for r in runs]
    steps = [{r["episode"]: r["env_steps"] for r in run.rows} for run in runs]
    minutes = [dict(zip([r["episode"] for r in run.rows],
                        np.cumsum([episode_seconds(r) for r in run.rows]) / 60)) for run in runs]
    episodes = sorted(set.intersection(*(set(s) for s in series)))
    values = trailing_mean(np.array([[s[e] for e in episodes] for s in series]).reshape(len(runs), -1), smooth)
    return {"episode": episodes, "env_steps": [float(np.mean([s[e] for s in steps])) for e in episodes],
            "minutes": [float(np.mean([m[e] for m in minutes])) for e in episodes],
            "mean": values.mean(axis=0).tolist(), "ci": [_ci(col, np.mean, rng, n_boot) for col in values.T]}


def by_horizon(calibrations: list[dict | None], target: str) -> dict | None:
    """Each CALIBRATION score of `target`'s open-loop predictions at horizons k = 1..H (those every run with the
    analysis has) over seeds: {score: {"mean": [...], "ci": [...], "n": [...]}} (over_seeds at each k; a run without
    a scored target at k is left out there), or None where no run has them."""
    series = [ph for c in calibrations if (ph := lookup(c, ("per_horizon", target))) is not None]
    if not series:
        return None
    horizon = min(len(ph["nll"]) for ph in series)
    stats = {m: [over_seeds(ph[m][k] for ph in series) for k in range(horizon)] for m in CALIBRATION}
    return {m: {key: [s[key] for s in column] for key in ("mean", "ci", "n")} for m, column in stats.items()}


def group_entry(variant: str, inference: str, runs: list[Run], args, rng: np.random.Generator) -> dict:
    """Everything report.json holds about one group (task variant x inference type), its seeds in order."""
    runs = sorted(runs, key=lambda r: r.config.seed)
    per_run = [{"dir": str(r.dir), "seed": r.config.seed,
                "final_return": final_value(r, args.metric, args.final_episodes),
                "final_episode": metric_series(r, args.metric)[0][-1],
                "minutes": sum(map(episode_seconds, r.rows)) / 60,
                "env_steps": r.rows[-1]["env_steps"]} for r in runs]
    gaps = [r.analysis["gaps"] for r in runs]
    calibration = [r.analysis["uncertainty"] for r in runs]
    # (injected, learned) observation noise std of each run with a calibration analysis
    noise = [(r.config.obs_noise, std) for r, c in zip(runs, calibration) if (std := learned_obs_std(c)) is not None]
    return {
        "task_variant": variant, "inference": inference, "n_seeds": len(runs), "runs": per_run,
        "final_return": summarize([p["final_return"] for p in per_run], rng, args.n_boot),
        "curves": {args.metric: curve(runs, args.metric, rng, args.n_boot),
                   "train_return": curve(runs, "train_return", rng, args.n_boot, SMOOTH),
                   **{k: curve(runs, k, rng, args.n_boot) for k in TRAINING_ELBOS
                      if all(metric_series(r, k)[1] for r in runs)}},
        "training_elbo": training_elbo(runs),
        "gaps": {col: over_seeds(value(r) for r in runs) for col, (_, value) in GAP_COLUMNS.items()},
        "gap_estimators": sorted({str(e) for g in gaps if (e := lookup(g, ("heldout", "estimator"))) is not None}),
        "uncertainty": {t: {m: over_seeds(lookup_number(c, ("summary", t, m)) for c in calibration)
                            for m in CALIBRATION} for t in TARGETS},
        "noise": {"injected_obs_std": over_seeds(i for i, _ in noise),
                  "learned_obs_std": over_seeds(s for _, s in noise),
                  "learned_minus_injected": over_seeds(s - i for i, s in noise)},
        "wall_clock": {"minutes": over_seeds(p["minutes"] for p in per_run),
                       "env_steps": over_seeds(p["env_steps"] for p in per_run)},
    }


def _resamplable(*samples) -> bool:
    """Whether a stratified bootstrap over these samples (one per task variant and side) has something to resample
    in each: a sample of one run is resampled as a constant, which gives an interval too narrow."""
    return min(len(x) for x in samples) > 1


def across_variants(groups: list[dict], rng: np.random.Generator, n_boot: int) -> list[dict]:
    """Per inference type run in every task variant (when there are several): the IQM of the final returns of all
    its runs pooled, with a bootstrap CI that resamples seeds within each variant (stratified) where every variant
    has at least 2 seeds (_resamplable)."""
    variants = sorted({g["task_variant"] for g in groups})
    if len(variants) < 2:
        return []
    out = []
    for inference in sorted({g["inference"] for g in groups}):
        finals = {g["task_variant"]: [p["final_return"] for p in g["runs"]]
                  for g in groups if g["inference"] == inference}
        if set(finals) != set(variants):
            continue
        pooled = np.concatenate([finals[v] for v in variants])
        out.append({"inference": inference, "task_variants": variants, "n": len(pooled), "iqm": float(iqm(pooled)),
                    "iqm_ci": list(stratified_bootstrap_ci(finals, iqm, n_boot, LEVEL, rng=rng))
                    if _resamplable(*finals.values()) else None})
    return out


def improvement_over(groups: list[dict], baseline: str, rng: np.random.Generator, n_boot: int) -> list[dict]:
    """P(final return of X > the baseline's) for each other inference type X (rliable's probability of
    improvement): per task variant, and over all variants (each variant a task, runs resampled within it) where
    there are several; with a stratified-bootstrap CI where both sides have at least 2 seeds."""
    finals = {(g["task_variant"], g["inference"]): [p["final_return"] for p in g["runs"]] for g in groups}
    variants = sorted({v for v, _ in finals})
    scopes = [[v] for v in variants] + ([variants] if len(variants) > 1 else [])
    out = []
    for inference in sorted({i for _, i in finals} - {baseline}):
        for scope in scopes:
            if not all((v, inference) in finals and (v, baseline) in finals for v in scope):
                continue
            x, y = ({v: finals[(v, name)] for v in scope} for name in (inference, baseline))
            out.append({"inference": inference, "baseline": baseline, "task_variants": scope,
                        "n": [sum(len(r) for r in x.values()), sum(len(r) for r in y.values())],
                        "smallest_p": smallest_rank_test_p([(len(x[v]), len(y[v])) for v in scope]),
                        "probability": probability_of_improvement(x, y),
                        "ci": list(probability_of_improvement_ci(x, y, n_boot, LEVEL, rng=rng))
                        if _resamplable(*x.values(), *y.values()) else None})
    return out


def differences(by_group: dict[tuple[str, str], list[Run]], baseline: str) -> list[dict]:
    """Per task variant, inference type X other than the baseline and MEASURES entry: mean over X's runs minus mean
    over the baseline's runs (runs with the value), with Welch's interval where both sides have at least 2 runs."""
    out = []
    for (variant, inference), runs in sorted(by_group.items()):
        if inference == baseline or (variant, baseline) not in by_group:
            continue
        for name, (title, value, higher_is_better) in MEASURES.items():
            x, y = ([v for r in rs if (v := value(r)) is not None] for rs in (runs, by_group[(variant, baseline)]))
            if x and y:
                out.append({"inference": inference, "baseline": baseline, "task_variant": variant, "measure": name,
                            "title": title, "higher_is_better": higher_is_better, "n": [len(x), len(y)],
                            "difference": float(np.mean(x) - np.mean(y)),
                            "ci": list(welch_interval(x, y, LEVEL)) if min(len(x), len(y)) > 1 else None})
    return out


def correlations(by_group: dict[tuple[str, str], list[Run]], groups: list[dict], rng: np.random.Generator,
                 n_boot: int) -> dict:
    """Per CORRELATES entry: each run's (value, final return as in `groups`) where the run has the value, and per task
    variant Spearman's rank correlation over its runs with its bootstrap CI (at least 3 runs; 4 for the CI). Never
    pooled over variants: a variant moves returns and gaps together (missing observations lower the one and raise the
    other), which a pooled correlation would read as a link between them."""
    finals = {p["dir"]: p["final_return"] for g in groups for p in g["runs"]}
    out = {}
    for name in CORRELATES:
        title, value, _ = MEASURES[name]
        points = [{"dir": str(r.dir), "task_variant": variant, "inference": inference, "x": x,
                   "final_return": finals[str(r.dir)]}
                  for (variant, inference), runs in sorted(by_group.items()) for r in runs
                  if (x := value(r)) is not None]
        by_variant = []
        for variant in sorted({p["task_variant"] for p in points}):
            xs, ys = (np.array([p[k] for p in points if p["task_variant"] == variant]) for k in ("x", "final_return"))
            rho = float(spearman(xs, ys)) if len(xs) >= 3 else None
            ci = list(spearman_ci(xs, ys, n_boot, LEVEL, rng=rng)) if len(xs) >= 4 and np.isfinite(rho) else None
            by_variant.append({"task_variant": variant, "runs": len(xs), "spearman": rho, "ci": ci})
        out[name] = {"title": title, "points": points, "by_variant": by_variant}
    return out


def computed_correlations(report: dict) -> list[tuple[str, dict, dict]]:
    """(correlate name, its entry, one variant's correlation) wherever a correlation could be computed."""
    return [(name, c, v) for name, c in report["correlations"].items() for v in c["by_variant"]
            if v["spearman"] is not None]
