"""Compare agent runs by task variant and inference type: learning curves, final returns (IQM with percentile-bootstrap
confidence intervals over seeds), the probability of improvement over a baseline, gaps, calibration, their rank
correlation with the final return across runs, and wall-clock, written to OUT/report.md, OUT/report.json and PNGs.

    python -m analysis.compare runs/* --out results/compare [--metric eval_return] [--final-episodes K]
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agent.checkpoint import write_atomic  # noqa: E402
from agent.config import AgentConfig  # noqa: E402
from agent.report import read_metrics, save_png  # noqa: E402
from analysis.markdown import table  # noqa: E402
from world_models.posteriors.registry import SMOOTHER  # noqa: E402
from analysis.stats import (bootstrap_ci, iqm, mean_t_interval,  # noqa: E402
                            probability_of_improvement, probability_of_improvement_ci, smallest_rank_test_p, spearman,
                            spearman_ci, stratified_bootstrap_ci, welch_interval)

DEFAULTS = {f.name: f.default for f in fields(AgentConfig)}
VARIANT_SETTINGS = ("obs", "missing_every", "missing_prob", "obs_noise", "action_noise")  # named when non-default
# may differ between the runs of one group: runs of different lengths (episodes) are the same treatment, compared
# where they end (a warning says so) or cut with --until-episode; physics_state only changes what is stored
REPLICATE_SETTINGS = ("seed", "device", "wandb", "episodes", "physics_state")
# gap -> (column title, its value in one run or None): nats per time step on held-out sequences, from
# RUN_DIR/analysis/gaps.json; the conditioning gap and own-minus-fresh compare fresh encoders, taken only from runs
# whose fresh encoders were fitted with a decaying step size (settled_fresh_fits)
GAP_COLUMNS = {**{name: (f"{name} gap", lambda run, name=name: _heldout(run, ("gaps", name)))
                  for name in ("inference", "approximation", "amortization")},
               "conditioning": ("conditioning gap",
                                lambda run: _heldout(run, ("gaps", "conditioning"))
                                if settled_fresh_fits(run.analysis["gaps"]) else None),
               "encoder_excess": ("own minus fresh encoder's amortization gap", lambda run: encoder_excess(run)),
               "log_px": ("log p(x)", lambda run: _heldout(run, ("log_px",)))}
TARGETS = ("obs", "reward", "state")
CALIBRATION = ("nll", "crps", "coverage50", "coverage90")  # RUN_DIR/analysis/uncertainty.json: summary.TARGET.*
# what a run's world model and inference are measured by on its frozen final model: {name: (title, value of one
# run or None, whether higher is better)}
MEASURES = {
    "log_px": ("held-out log p(x) (nats / step)", GAP_COLUMNS["log_px"][1], True),
    "inference_gap": ("inference gap (nats / step, held out)", GAP_COLUMNS["inference"][1], False),
    "amortization_gap": ("amortization gap (nats / step, held out)", GAP_COLUMNS["amortization"][1], False),
    "encoder_excess": ("own amortization gap minus a fresh encoder's (nats / step, held out)",
                       GAP_COLUMNS["encoder_excess"][1], False),
    "obs_nll": ("open-loop observation NLL (nats, horizons 1-50)",
                lambda run: _number(run.analysis["uncertainty"], ("summary", "obs", "nll")), False),
    # CRPS beside the NLL: a proper score in the observations' units that one overconfident long horizon cannot
    # move by hundreds, and that also rewards sharp predictions where the NLL rewards wide ones
    "obs_crps": ("open-loop observation CRPS (mean over dimensions, horizons 1-50)",
                 lambda run: _number(run.analysis["uncertainty"], ("summary", "obs", "crps")), False),
    "coverage_error": ("observation coverage error: (|c50 - 0.5| + |c90 - 0.9|) / 2",
                       lambda run: coverage_error(run.analysis["uncertainty"], "obs"), False),
}
CORRELATES = ("amortization_gap", "coverage_error")  # what each run's final return is set against in scatter plots
SECONDS = ("train_seconds", "collect_seconds", "eval_seconds")  # planning is part of collecting
SMOOTH = 5  # train returns: trailing mean over this many episodes
# metrics.jsonl's training ELBO per step (mean over an episode's updates, on replay batches, without free nats):
# "elbo" at the posterior the model learns at (lambda^K for semi_amortized and iterative_amortized), "elbo_init" at
# the encoder's own output lambda^0 (those two only)
TRAINING_ELBOS = ("elbo", "elbo_init")
LAST = 10  # training ELBO summaries: mean over each run's last LAST episodes
LEVEL = 0.95
HORIZON_BAND_SEEDS = 3  # the calibration-by-horizon plot shades a group's interval from this many seeds


@dataclass
class Run:
    dir: Path
    config: AgentConfig
    rows: list[dict]
    analysis: dict  # "gaps", "uncertainty": the parsed RUN_DIR/analysis/*.json, or None where absent

    def group(self, split_by: tuple[str, ...] = ()) -> tuple[str, str]:
        """(task variant, inference type plus each of `split_by`'s settings, e.g. 'amortized planner_preset=cpu')."""
        return task_variant(self.config), " ".join([self.config.inference,
                                                   *(f"{k}={getattr(self.config, k)}" for k in split_by)])


def task_variant(cfg: AgentConfig) -> str:
    """The env plus each variant setting that differs from its default, e.g. 'cartpole missing_every=2'."""
    changed = [f"{k}={getattr(cfg, k)}" for k in VARIANT_SETTINGS if getattr(cfg, k) != DEFAULTS[k]]
    return " ".join([cfg.env, *changed])


# --- loading ---------------------------------------------------------------------------------------
def read_run(run_dir: Path, metric: str, until_episode: int | None = None) -> Run:
    """One run directory, its metrics up to `until_episode` (all by default); raises ValueError saying what
    is missing or unreadable."""
    if not (run_dir / "metrics.jsonl").is_file():
        raise ValueError("no metrics.jsonl")
    config = AgentConfig.load(run_dir / "config.json")
    try:
        rows = read_metrics(run_dir)
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt metrics.jsonl: {e}") from None
    if until_episode is not None:
        rows = [r for r in rows if r["episode"] <= until_episode]
    if not any(r.get(metric) is not None for r in rows):
        raise ValueError(f"no {metric} values in metrics.jsonl yet")
    analyses = {name: _read_analysis(run_dir / "analysis" / f"{name}.json") for name in ("gaps", "uncertainty")}
    # an analysis of the model after a later episode than the report's cut describes another model: left out
    later = lambda a: until_episode is not None and (_number(a, ("checkpoint_episode",)) or math.inf) > until_episode
    return Run(run_dir, config, rows, {name: None if later(a) else a for name, a in analyses.items()})


def episode_seconds(row: dict) -> float:
    """Wall-clock of one metrics.jsonl row (episode): training, collecting (planning included) and evaluation."""
    return sum(row.get(k, 0.0) for k in SECONDS)


def _read_analysis(path: Path):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"warning: ignoring unreadable {path}: {e}", file=sys.stderr)
        return None


def load_runs(patterns: list[str], metric: str, until_episode: int | None = None) -> tuple[list[Run], list[dict]]:
    """The valid runs among the directories (glob patterns are expanded too), and the skipped ones with reasons."""
    dirs = dict.fromkeys(Path(p) for pattern in patterns for p in sorted(glob.glob(pattern)) or [pattern])
    runs, skipped = [], []
    for run_dir in dirs:
        try:
            runs.append(read_run(run_dir, metric, until_episode))
        except ValueError as e:
            print(f"warning: skipping {run_dir}: {e}", file=sys.stderr)
            skipped.append({"dir": str(run_dir), "reason": str(e)})
    return runs, skipped


def grouped(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (task variant, inference type); where the runs of one such group differ in other settings than
    REPLICATE_SETTINGS (e.g. the planner preset), it is split by them and they are named in its label."""
    by_base: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        by_base.setdefault(run.group(), []).append(run)
    out: dict[tuple[str, str], list[Run]] = {}
    for members in by_base.values():
        split_by = tuple(k for k in DEFAULTS if k not in REPLICATE_SETTINGS
                         and len({repr(getattr(r.config, k)) for r in members}) > 1)
        for run in members:
            out.setdefault(run.group(split_by), []).append(run)
    return out


def group_warnings(variant: str, inference: str, runs: list[Run], metric: str) -> list[str]:
    """Ways in which the runs of one group are not plain replicates of each other."""
    name, out = f"{variant} / {inference}", []
    seeds = [r.config.seed for r in runs]
    if len(set(seeds)) < len(seeds):
        out.append(f"{name}: repeated seeds {sorted(seeds)}")
    finals = sorted({_series(r, metric)[0][-1] for r in runs})
    if len(finals) > 1:
        out.append(f"{name}: runs end at different episodes {finals}: final values are not at the same point")
    return out


def analysis_flags(run: Run) -> list[str]:
    """The failed checks and warnings that a run's gap analysis (analysis/gaps.json) raised, per split."""
    gaps = run.analysis["gaps"] or {}
    return [f"{run.dir}: gap analysis, {split} split: {kind}: {message}" for split in ("heldout", "train")
            if isinstance(gaps.get(split), dict)
            for kind, key in (("FAILED CHECK", "failures"), ("warning", "warnings"))
            for message in gaps[split].get(key, [])]


# --- numbers ---------------------------------------------------------------------------------------
def _series(run: Run, key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in run.rows if r.get(key) is not None]
    return [r["episode"] for r in rows], [float(r[key]) for r in rows]


def final_value(run: Run, metric: str, k: int) -> float:
    """Mean of the run's last k values of `metric` (fewer if it has fewer)."""
    return float(np.mean(_series(run, metric)[1][-k:]))


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
    values = _series(run, key)[1]
    return float(np.mean(values[-LAST:])) if values else None


def lowest_late(run: Run, key: str) -> float | None:
    """The lowest value of `key` in the second half of the run's episodes (a collapse late in training shows here
    when the run's last episodes have recovered), or None where it has none there."""
    episodes, values = _series(run, key)
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
    series = [dict(zip(*_series(r, key))) for r in runs]
    steps = [{r["episode"]: r["env_steps"] for r in run.rows} for run in runs]
    minutes = [dict(zip([r["episode"] for r in run.rows],
                        np.cumsum([episode_seconds(r) for r in run.rows]) / 60)) for run in runs]
    episodes = sorted(set.intersection(*(set(s) for s in series)))
    values = trailing_mean(np.array([[s[e] for e in episodes] for s in series]).reshape(len(runs), -1), smooth)
    return {"episode": episodes, "env_steps": [float(np.mean([s[e] for s in steps])) for e in episodes],
            "minutes": [float(np.mean([m[e] for m in minutes])) for e in episodes],
            "mean": values.mean(axis=0).tolist(), "ci": [_ci(col, np.mean, rng, n_boot) for col in values.T]}


def _get(data, keys):
    """data[k1][k2]..., or None where a level is missing."""
    for k in keys:
        if not isinstance(data, dict) or k not in data:
            return None
        data = data[k]
    return data


def _number(data, keys):
    """data[k1][k2]... as a finite float, or None where a level is missing or the value is not a number."""
    x = _get(data, keys)
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) else None


def _heldout(run: Run, keys: tuple[str, ...]) -> float | None:
    """A per-step mean on held-out sequences from the run's gaps.json (keys below "heldout"), or None."""
    return _number(run.analysis["gaps"], ("heldout", *keys, "mean_per_step"))


def encoder_excess(run: Run) -> float | None:
    """The run's own amortization gap minus that of a fresh encoder of its kind fitted to its frozen model (the
    smoother for amortized_smoothing, the filter for the others, whose encoders filter): what training its inference
    jointly with the model (free nats included) costs, beside what the same family can do on that model. For
    semi_amortized and iterative_amortized its own posterior includes their K steps. None where either is missing
    (per_sequence has no amortization gap)."""
    kind = "smoother" if run.config.inference == SMOOTHER else "filter"
    own, fresh = _heldout(run, ("gaps", "amortization")), _heldout(run, ("gaps", f"amortization[{kind}]"))
    return None if own is None or fresh is None or not settled_fresh_fits(run.analysis["gaps"]) else own - fresh


def settled_fresh_fits(gaps: dict | None) -> bool:
    """Whether a gap analysis (gaps.json) fitted its fresh encoders with a step size decayed to 0 (its settings'
    encoder_lr_schedule "cosine"). Fitted at a constant 1e-2, as in the study's runs before session 22, a fit ended
    wherever its last step fell in Adam's noise ball, up to 11 nats per step below its best checkpoint: compared
    with such a fit, an encoder looked better than what its family can do on the model."""
    return _get(gaps, ("settings", "encoder_lr_schedule")) == "cosine"


def coverage_error(uncertainty: dict | None, target: str) -> float | None:
    """Mean absolute miscalibration of the 50% and 90% predictive intervals of `target` (0 = calibrated)."""
    c50, c90 = (_number(uncertainty, ("summary", target, m)) for m in ("coverage50", "coverage90"))
    return None if c50 is None or c90 is None else (abs(c50 - 0.5) + abs(c90 - 0.9)) / 2


def by_horizon(calibrations: list[dict | None], target: str) -> dict | None:
    """Each CALIBRATION score of `target`'s open-loop predictions at horizons k = 1..H (those every run with the
    analysis has) over seeds: {score: {"mean": [...], "ci": [...], "n": [...]}} (over_seeds at each k; a run without
    a scored target at k is left out there), or None where no run has them."""
    series = [ph for c in calibrations if (ph := _get(c, ("per_horizon", target))) is not None]
    if not series:
        return None
    horizon = min(len(ph["nll"]) for ph in series)
    stats = {m: [over_seeds(ph[m][k] for ph in series) for k in range(horizon)] for m in CALIBRATION}
    return {m: {key: [s[key] for s in column] for key in ("mean", "ci", "n")} for m, column in stats.items()}


def learned_obs_std(uncertainty: dict | None) -> float | None:
    """The model's observation noise std, sqrt of its mean emission variance (analysis.uncertainty's noise.model)."""
    var = _number(uncertainty, ("noise", "model", "emission_var"))
    return None if var is None else var ** 0.5


def group_entry(variant: str, inference: str, runs: list[Run], args, rng: np.random.Generator) -> dict:
    """Everything report.json holds about one group (task variant x inference type), its seeds in order."""
    runs = sorted(runs, key=lambda r: r.config.seed)
    per_run = [{"dir": str(r.dir), "seed": r.config.seed,
                "final_return": final_value(r, args.metric, args.final_episodes),
                "final_episode": _series(r, args.metric)[0][-1],
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
                      if all(_series(r, k)[1] for r in runs)}},
        "training_elbo": training_elbo(runs),
        "gaps": {col: over_seeds(value(r) for r in runs) for col, (_, value) in GAP_COLUMNS.items()},
        "gap_estimators": sorted({str(e) for g in gaps if (e := _get(g, ("heldout", "estimator"))) is not None}),
        "uncertainty": {t: {m: over_seeds(_number(c, ("summary", t, m)) for c in calibration) for m in CALIBRATION}
                        for t in TARGETS},
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
                  for (variant, inference), runs in sorted(by_group.items()) for r in runs if (x := value(r)) is not None]
        by_variant = []
        for variant in sorted({p["task_variant"] for p in points}):
            xs, ys = (np.array([p[k] for p in points if p["task_variant"] == variant]) for k in ("x", "final_return"))
            rho = float(spearman(xs, ys)) if len(xs) >= 3 else None
            ci = list(spearman_ci(xs, ys, n_boot, LEVEL, rng=rng)) if len(xs) >= 4 and np.isfinite(rho) else None
            by_variant.append({"task_variant": variant, "runs": len(xs), "spearman": rho, "ci": ci})
        out[name] = {"title": title, "points": points, "by_variant": by_variant}
    return out


def _correlated(report: dict) -> list[tuple[str, dict, dict]]:
    """(correlate name, its entry, one variant's correlation) wherever a correlation could be computed."""
    return [(name, c, v) for name, c in report["correlations"].items() for v in c["by_variant"]
            if v["spearman"] is not None]


# --- plots -----------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def plot_curves(variant: str, groups: list[dict], metric: str, colors: dict, path: Path) -> None:
    """The metric and the train return against env steps, the metric against wall-clock minutes, and the training
    ELBO against env steps (solid at the model's posterior, dashed at the encoder's output where it differs)."""
    fig, axes = plt.subplots(4, 1, figsize=(7, 11.5))
    panels = [(metric, "env_steps", f"{metric}: mean over seeds, {LEVEL:.0%} bootstrap CI"),
              ("train_return", "env_steps", f"train_return (with exploration noise), trailing mean over {SMOOTH} "
                                            f"episodes"),
              (metric, "minutes", f"{metric} against wall-clock (training, collection and evaluation; mean over "
                                  f"seeds)")]
    for ax, (key, x, title) in zip(axes, panels):
        for g in groups:
            c = g["curves"][key]
            color = colors[g["inference"]]
            ax.plot(c[x], c["mean"], "o-" if key == metric else "-", ms=3, color=color,
                    label=f"{g['inference']} (n={g['n_seeds']})")
            if g["n_seeds"] > 1 and c["episode"]:
                ax.fill_between(c[x], *np.transpose(c["ci"]), color=color, alpha=0.2, lw=0)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("episode return")
        ax.set_xlabel("minutes" if x == "minutes" else "environment steps")
    ax = axes[3]
    for g in groups:
        for key, style in zip(TRAINING_ELBOS, ("-", "--")):
            if key in g["curves"]:
                c = g["curves"][key]
                ax.plot(c["env_steps"], c["mean"], style, color=colors[g["inference"]], lw=1)
                if key == "elbo" and g["n_seeds"] > 1 and c["episode"]:
                    ax.fill_between(c["env_steps"], *np.transpose(c["ci"]), color=colors[g["inference"]], alpha=0.2,
                                    lw=0)
    ax.set_title("training ELBO per step (mean over seeds): solid at the posterior the model learns at,\ndashed "
                 "at the encoder's output (semi_amortized, iterative_amortized)", fontsize=9)
    ax.set_yscale("symlog", linthresh=10)   # linear within +-10 nats per step, where runs that train well stay
    ax.set_ylabel("nats / step (symlog)")
    ax.set_xlabel("environment steps")
    axes[0].legend(fontsize=8)
    fig.suptitle(variant)
    fig.tight_layout()
    save_png(fig, path)


def plot_horizons(variant: str, groups: dict[str, list[Run]], colors: dict, path: Path) -> bool:
    """Per target (a row), the open-loop NLL, CRPS and coverage of the central 50% (dashed) and 90% (solid)
    intervals against the horizon: one line per inference type, mean over seeds, its t interval shaded from
    HORIZON_BAND_SEEDS seeds (with 2, t_{0.975, 1} = 12.7 stretches the band over the whole panel). False, and
    nothing written, where no run has scores per horizon."""
    horizons = {(inference, t): h for inference, runs in groups.items() for t in TARGETS
                if (h := by_horizon([r.analysis["uncertainty"] for r in runs], t)) is not None}
    if not horizons:
        return False
    targets = [t for t in TARGETS if any(target == t for _, target in horizons)]
    fig, axes = plt.subplots(len(targets), 3, figsize=(11, 2.8 * len(targets)), squeeze=False)
    for row, target in zip(axes, targets):
        for inference, runs in groups.items():
            if (h := horizons.get((inference, target))) is None:
                continue
            for ax, score, style in ((row[0], "nll", "-"), (row[1], "crps", "-"), (row[2], "coverage90", "-"),
                                     (row[2], "coverage50", "--")):
                ks = np.arange(1, len(h[score]["mean"]) + 1)
                mean = np.array([np.nan if m is None else m for m in h[score]["mean"]])
                ax.plot(ks, mean, style, color=colors[inference], lw=1.2,
                        label=f"{inference} (n={len(runs)})" if score == "nll" else None)
                ci = np.array([(np.nan, np.nan) if c is None or n < HORIZON_BAND_SEEDS else c
                               for c, n in zip(h[score]["ci"], h[score]["n"])])
                if not np.isnan(ci).all():
                    ax.fill_between(ks, ci[:, 0], ci[:, 1], color=colors[inference], alpha=0.15, lw=0)
        nll = "NLL (nats)"
        if np.nanmax(np.abs(row[0].get_ylim())) > 100:
            row[0].set_yscale("symlog", linthresh=10)   # linear within +-10 nats, where short horizons stay
            nll = "NLL (nats, symlog)"
        for ax, name in zip(row, (nll, "CRPS", "observed coverage (90% solid, 50% dashed)")):
            ax.set_title(f"{target}: {name}", fontsize=9)
            ax.set_xlabel("horizon k (steps)")
            ax.grid(alpha=0.3)
        for level in (0.5, 0.9):
            row[2].axhline(level, color="k", lw=0.6, ls=":")
        row[2].set_ylim(0, 1.02)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{variant}: open-loop predictions by horizon, mean over seeds ({LEVEL:.0%} t interval shaded "
                 f"where a group has {HORIZON_BAND_SEEDS} or more)")
    fig.tight_layout()
    save_png(fig, path)
    return True


def plot_final(panels: dict[str, list[dict]], inferences: list[str], colors: dict, xlabel: str, path: Path) -> None:
    """rliable-style interval plot: per panel (task variant) one row per inference type, a bar over the CI and a
    black tick at the IQM."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1.5, 0.5 * len(inferences) + 1.4),
                             sharey=True, squeeze=False)
    for ax, (title, entries) in zip(axes[0], panels.items()):
        for e in entries:
            y = inferences.index(e["inference"])
            if e["iqm_ci"] is not None:
                low, high = e["iqm_ci"]
                ax.barh(y, high - low, left=low, height=0.6, color=colors[e["inference"]], alpha=0.75)
            ax.vlines(e["iqm"], y - 0.3, y + 0.3, color="k", lw=2)
        ax.use_sticky_edges = False
        ax.margins(x=0.1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(inferences)), inferences)
    axes[0][0].set_ylim(-0.6, len(inferences) - 0.4)
    fig.tight_layout()
    save_png(fig, path)


def plot_correlation(entry: dict, metric: str, colors: dict, path: Path) -> None:
    """Final return against one correlate, one point per run, coloured by inference type, marked by task variant."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    markers = {v: m for v, m in zip(sorted({p["task_variant"] for p in entry["points"]}), "osD^v<>")}
    for p in entry["points"]:
        ax.scatter(p["x"], p["final_return"], color=colors[p["inference"]], marker=markers[p["task_variant"]], s=28,
                   alpha=0.85)
    for name in sorted({p["inference"] for p in entry["points"]}):
        ax.scatter([], [], color=colors[name], label=name)
    if len(markers) > 1:
        for v, m in markers.items():
            ax.scatter([], [], color="gray", marker=m, label=v)
    rho = "; ".join(f"{v['task_variant']}: Spearman {_with_ci(v['spearman'], v['ci'])}" for v in entry["by_variant"]
                    if v["spearman"] is not None)
    ax.set_title(f"{len(entry['points'])} runs. {rho}", fontsize=8)
    ax.set_xlabel(entry["title"], fontsize=8)
    ax.set_ylabel(f"final {metric}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


# --- report ----------------------------------------------------------------------------------------
def _fmt(x, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _with_ci(value: float, ci, digits: int = 2) -> str:
    """'value [low, high]', or the value alone where there is no interval."""
    return f"{value:.{digits}f}" + ("" if ci is None else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]")


def _iqm_ci(stat: dict, no_ci: str = "one seed") -> str:
    return _with_ci(stat["iqm"], stat["iqm_ci"], 1) + (f" ({no_ci}: no CI)" if stat["iqm_ci"] is None else "")


def _mean_ci(stat: dict, digits: int) -> str:
    """'mean [low, high] (n)' of an over_seeds entry, the mean alone for one seed, '–' when no seed has the value."""
    return f"{_with_ci(stat['mean'], stat['ci'], digits)} ({stat['n']})" if stat["n"] else "–"


def _reading(ci, null: float, above: str, below: str, without: str = "one run on a side") -> str:
    """What an interval says against the value of no effect (`without`: why there is no interval)."""
    if ci is None:
        return f"no interval ({without}): no claim"
    if ci[0] > null:
        return above
    if ci[1] < null:
        return below
    return f"no difference shown (the interval contains {null:g})"


def _too_few_to_read(e: dict) -> bool:
    """Whether no exact rank test at a probability of improvement's numbers of runs could reach p < 1 - LEVEL:
    then a bootstrap interval that excludes 0.5 is an artefact of too few seeds."""
    return e["smallest_p"] >= 1 - LEVEL


def _improvement_reading(e: dict) -> str:
    """_reading of a probability of improvement, unless it has too few runs to be read (_too_few_to_read)."""
    if e["ci"] is not None and _too_few_to_read(e):
        return (f"too few runs to tell (no exact rank test at these numbers of runs reaches p < {1 - LEVEL:g}: "
                f"its smallest p is {e['smallest_p']:.2f})")
    return _reading(e["ci"], 0.5, "X better", "X worse")


def findings(report: dict) -> list[str]:
    """The section 'what the data shows and what it does not': every comparison the report makes, read only by
    whether its interval excludes the value of no effect (a probability of improvement only where its numbers of
    runs allow an exact rank test to reach p < 1 - LEVEL); the chance count leaves out the intervals not read."""
    base = f"`{report['baseline']}`"
    rows = [[f"`{e['inference']}` vs {base}", ", ".join(e["task_variants"]), "final return: P(X > baseline)",
             f"{e['n'][0]}, {e['n'][1]}", _with_ci(e["probability"], e["ci"]),
             _improvement_reading(e)] for e in report["improvement"]]
    rows += [[f"`{d['inference']}` vs {base}", d["task_variant"], f"{d['title']}: X - baseline",
              f"{d['n'][0]}, {d['n'][1]}", _with_ci(d["difference"], d["ci"], 3),
              _reading(d["ci"], 0.0, *(("X better", "X worse") if d["higher_is_better"] else ("X worse", "X better")))]
             for d in report["differences"]]
    # within a group, against 0: does training the encoder with the model cost it what a fresh fit shows?
    excess = [(g, s) for g in report["groups"] if (s := g["gaps"]["encoder_excess"])["n"]]
    own = [[f"`{g['inference']}`", g["task_variant"], str(s["n"]), _with_ci(s["mean"], s["ci"], 3),
            _reading(s["ci"], 0.0, "own encoder worse", "own encoder better", "one run")] for g, s in excess]
    correlated = _correlated(report)
    corr = [[c["title"], v["task_variant"], str(v["runs"]), _with_ci(v["spearman"], v["ci"]),
             _reading(v["ci"], 0.0, "larger values go with higher returns", "larger values go with lower returns",
                      "fewer than 4 runs")] for _, c, v in correlated]
    if not rows and not own and not corr:
        return []
    n_intervals = sum(e["ci"] is not None for e in [*(i for i in report["improvement"] if not _too_few_to_read(i)),
                                                    *report["differences"], *(s for _, s in excess),
                                                    *(v for _, _, v in correlated)])
    chance = (f"with {n_intervals} intervals about {n_intervals * (1 - LEVEL):.1f} would exclude that value by chance "
              "alone if nothing differed: a single excluded value is a lead to follow with more seeds, not a finding"
              if n_intervals else "no comparison has an interval yet (each side needs 2 seeds, a correlation 4 runs): "
              "nothing below is a finding")
    lines = ["## What the data shows and what it does not", "",
             f"Every comparison below, read only by whether its {LEVEL:.0%} interval excludes the value of no effect "
             "(0.5 for a probability of improvement, 0 for a difference or a correlation). A difference of means has "
             "Welch's t interval (unequal variances); a probability of improvement and a correlation have bootstrap "
             "intervals, which over few seeds are rough and tend to be too narrow (at complete separation one "
             "collapses to a point), so a probability of improvement is read only where an exact rank test at its "
             f"numbers of runs could reach p < {1 - LEVEL:g} (3 against 3 runs cannot: its smallest p is "
             f"{smallest_rank_test_p([(3, 3)]):.1f}); and "
             f"{chance}. A run's log p(x), "
             "gaps and calibration are measured on held-out episodes of its own agent, so their differences mix the "
             "quality of the model and inference with the states each agent visits.", ""]
    if rows:
        lines += table(["comparison", "task variants", "measure", "runs (X, baseline)", f"value [{LEVEL:.0%} CI]",
                         "reading"], rows)
    if own:
        lines += ["Within each group, against 0: the run's own amortization gap minus that of a fresh encoder of its "
                  "kind fitted to the frozen final model (nats / step, held out; Student-t interval over seeds, "
                  "runs with settled fresh fits only). Above 0, training the encoder jointly with the model (free "
                  "nats included) left it worse than its family can do on that model.", ""]
        lines += table(["inference", "task variant", "runs", f"own minus fresh [{LEVEL:.0%} CI]", "reading"], own)
    if corr:
        lines += table(["final return against", "task variant", "runs", f"Spearman [{LEVEL:.0%} CI]", "reading"], corr)
    return lines


# how the per-group tables (gaps, calibration, noise, wall-clock) summarize their seeds
SEED_MEAN = (f"mean over seeds [{LEVEL:.0%} Student-t interval, mean -+ t * standard error across seeds; none for "
             "one seed] (seeds with the value)")


def markdown(report: dict, curve_pngs: dict[str, str], horizon_pngs: dict[str, str]) -> str:
    metric, k, groups = report["metric"], report["final_episodes"], report["groups"]
    lines = ["# Run comparison", "", "Produced by:", "", "```bash", report["command"], "```", "",
             f"{sum(g['n_seeds'] for g in groups)} runs in {len(groups)} groups (task variant x inference type); "
             "the seeds of a group are its replicates."
             + ("" if report.get("until_episode") is None else f" Every run is cut at episode {report['until_episode']}."),
             ""]
    if report["skipped"]:
        lines += ["Skipped run directories:", "", *(f"- `{s['dir']}`: {s['reason']}" for s in report["skipped"]), ""]
    if report["warnings"]:
        lines += ["Warnings:", "", *(f"- {w}" for w in report["warnings"]), ""]
    lines += findings(report)
    lines += ["## Final returns", "",
              f"Final return of a run: the mean {metric} over its last {k} episode(s) that have one"
              + (", i.e. its final evaluation." if k == 1 and metric == "eval_return" else "."),
              f"Intervals are {LEVEL:.0%} percentile-bootstrap confidence intervals over seeds: the seeds of a group "
              f"are resampled with replacement {report['n_boot']} times, the statistic is recomputed on each "
              f"resample, and the interval spans the {(1 - LEVEL) / 2:.1%} to {(1 + LEVEL) / 2:.1%} percentiles of "
              "those values. With few seeds they are rough (3 seeds allow only 10 distinct resamples) and tend to be "
              "too narrow. The IQM drops floor(n/4) runs from each end (rliable's definition), so with fewer than 4 "
              "seeds it is the mean.", ""]
    lines += table(["task variant", "inference", "seeds", "mean", f"IQM [{LEVEL:.0%} CI]", "median", "min", "max"],
                    [[g["task_variant"], g["inference"], str(f["n"]), _fmt(f["mean"], 1),
                      _iqm_ci(f), _fmt(f["median"], 1),
                      _fmt(f["min"], 1), _fmt(f["max"], 1)] for g in groups for f in [g["final_return"]]])
    lines += ["![final returns: IQM and CI](final_iqm.png)", ""]
    if report["across_variants"]:
        lines += ["Across task variants (raw returns pooled, seeds resampled within each variant; meaningful only "
                  "when the variants share a return scale):", ""]
        lines += table(["inference", "runs", f"IQM [{LEVEL:.0%} CI]"],
                        [[a["inference"], str(a["n"]), _iqm_ci(a, "a variant with one seed")]
                         for a in report["across_variants"]])
    if report["improvement"]:
        lines += [f"Probability of improvement over `{report['baseline']}`: P(final return of a run of X > one of "
                  f"the baseline's), ties counted half (rliable's definition; over several variants, the mean of "
                  f"the per-variant probabilities); 0.5 = no difference. {LEVEL:.0%} stratified-bootstrap CI (each "
                  "side's seeds resampled within each variant).", ""]
        lines += table(["inference", "task variants", "runs (X, baseline)", f"P(X > {report['baseline']}) [CI]"],
                        [[e["inference"], ", ".join(e["task_variants"]), f"{e['n'][0]}, {e['n'][1]}",
                          _with_ci(e["probability"], e["ci"])] for e in report["improvement"]])
    lines += ["## Learning curves", "",
              f"Top: {metric}, mean over seeds at the episodes all seeds share, against environment steps, with a "
              f"pointwise {LEVEL:.0%} bootstrap CI. Second: the training episodes' return (exploration noise on), "
              f"trailing mean over {SMOOTH} episodes. Third: {metric} against the wall-clock minutes spent up to "
              f"that episode (training, collection with planning, evaluation). Last: the training ELBO per step "
              f"(section Training ELBO), each episode's, not smoothed.", ""]
    for variant, png in curve_pngs.items():
        lines += [f"### {variant}", "", f"![learning curves, {variant}]({png})", ""]
    if any(g["training_elbo"]["elbo"]["n"] for g in groups):
        lines += ["## Training ELBO", "",
                  "From each run's metrics.jsonl: the ELBO per step of its training updates (on replay batches, "
                  "without free nats), at the posterior the model learns at and, for semi_amortized and "
                  "iterative_amortized, at the encoder's own output lambda^0 (before the K gradient steps or learned "
                  "updates); the gain is their difference per update that takes those steps (semi_amortized takes "
                  "them on every k-th update only, `--refine-every`, and learns at lambda^0 on the others: the mean "
                  "difference divided by the fraction of updates that refined). Means over each run's last "
                  f"{LAST} episodes. Last column: the "
                  "lowest episode's training ELBO in the run's second half (a collapse that the last episodes "
                  f"recovered from shows there). Each is then a {SEED_MEAN}.", ""]
        titles = {"elbo": "training ELBO", "elbo_init": "at the encoder's output",
                  "refinement_gain": "gain per refining update", "lowest_late_elbo": "lowest, second half"}
        lines += table(["task variant", "inference", *titles.values()],
                       [[g["task_variant"], g["inference"], *(_mean_ci(g["training_elbo"][k], 2) for k in titles)]
                        for g in groups])
    gap_cols = [c for c in GAP_COLUMNS if any(g["gaps"][c]["n"] for g in groups)]
    if gap_cols:
        estimators = sorted({e for g in groups for e in g["gap_estimators"]})
        lines += ["## Gaps", "", "Held-out sequences, nats per time step (from each run's `analysis/gaps.json`): "
                  f"{SEED_MEAN}. Each gap is of the run's own posterior; \"own minus fresh\" is its amortization "
                  "gap minus that of a fresh encoder of its kind (the smoother for amortized_smoothing, the filter "
                  "otherwise) fitted to the frozen model: above 0, training the encoder with the model cost it that "
                  "much. The conditioning gap and own minus fresh compare fresh encoders and come only from runs "
                  "whose fresh encoders' step size decayed to 0 (`encoder_lr_schedule: cosine` in gaps.json); fits "
                  "at a constant step size ended wherever their last step fell"
                  + (f" (left out: {', '.join(report['unsettled_fresh_fits'])})"
                     if report.get("unsettled_fresh_fits") else "") + "."
                  + (f" log p(x) estimator: {', '.join(estimators)}." if estimators else ""), ""]
        lines += table(["task variant", "inference", *(GAP_COLUMNS[c][0] for c in gap_cols)],
                        [[g["task_variant"], g["inference"], *(_mean_ci(g["gaps"][c], 3) for c in gap_cols)]
                         for g in groups if any(g["gaps"][c]["n"] for c in gap_cols)])
    calib = [(g, t) for g in groups for t in TARGETS if any(g["uncertainty"][t][m]["n"] for m in CALIBRATION)]
    if calib:
        lines += ["## Calibration", "", f"From each run's `analysis/uncertainty.json`: {SEED_MEAN}.", ""]
        lines += table(["task variant", "inference", "target", *CALIBRATION],
                        [[g["task_variant"], g["inference"], t,
                          *(_mean_ci(g["uncertainty"][t][m], 3) for m in CALIBRATION)]
                         for g, t in calib])
        lines += ["", "Each score above is the mean over horizons 1 to the analysis' horizon (50 in the study), "
                  "weighted by the scored targets at each. A model's NLL grows with the horizon as its open-loop "
                  "predictions drift, so the long horizons dominate the mean NLL, and one overconfident run moves "
                  "it by hundreds of nats. Per horizon (the interval over seeds shaded where a group has "
                  f"{HORIZON_BAND_SEEDS} seeds or more; each run's scores per horizon are in its "
                  "`analysis/uncertainty.json`, per_horizon):", ""]
        lines += [f"![calibration by horizon, {v}]({png})" for v, png in horizon_pngs.items()] + [""]
    noise = [g for g in groups if g["noise"]["learned_obs_std"]["n"]]
    if noise:
        lines += ["", "Learned observation noise next to the injected one (`obs_noise`, the std of the Gaussian "
                  "noise added to each observation): the learned std is the square root of the model's mean emission "
                  "variance; with nothing injected it measures what the model cannot predict, not an error. "
                  f"{SEED_MEAN}.",
                  ""]
        lines += table(["task variant", "inference", "injected std", "learned std", "learned - injected"],
                        [[g["task_variant"], g["inference"], *(_mean_ci(g["noise"][k], 4) for k in g["noise"])]
                         for g in noise])
    shown = _correlated(report)
    if shown:
        lines += ["## Across runs: what goes with the final return", "",
                  f"One point per run with the value; per task variant, Spearman's rank correlation with a {LEVEL:.0%} "
                  "bootstrap CI (runs resampled). Never pooled over variants, which move returns and gaps together. "
                  "A correlation across runs of different inference types mixes the effect of the inference type with "
                  "that of the quantity.", ""]
        lines += table(["final return against", "task variant", "runs", "Spearman [CI]"],
                        [[c["title"], v["task_variant"], str(v["runs"]), _with_ci(v["spearman"], v["ci"])]
                         for _, c, v in shown])
        lines += [f"![final return against {c['title']}](scatter_{k}.png)"
                  for k, c in {k: c for k, c, _ in shown}.items()] + [""]
    lines += ["## Wall-clock", "", "Per run: the sum of training, collection (planning included) and evaluation "
              f"seconds over its episodes (checkpointing and plotting not counted); {SEED_MEAN}.",
              ""]
    lines += table(["task variant", "inference", "minutes per run", "env steps per run"],
                    [[g["task_variant"], g["inference"], _mean_ci(g["wall_clock"]["minutes"], 1),
                      _mean_ci(g["wall_clock"]["env_steps"], 0)] for g in groups])
    lines += ["## Runs", ""]
    lines += table(["run", "task variant", "inference", "seed", f"final {metric}", "final episode", "minutes"],
                    [[f"`{p['dir']}`", g["task_variant"], g["inference"], str(p["seed"]), _fmt(p["final_return"], 1),
                      str(p["final_episode"]), _fmt(p["minutes"], 1)] for g in groups for p in g["runs"]])
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or quoted glob patterns)")
    p.add_argument("--out", required=True, type=Path, help="where report.md, report.json and the PNGs go")
    p.add_argument("--metric", default="eval_return", help="the metrics.jsonl field compared (default eval_return)")
    p.add_argument("--final-episodes", type=_positive_int, default=1, metavar="K",
                   help="final return = mean of the metric over each run's last K episodes that have it (default 1)")
    p.add_argument("--n-boot", type=_positive_int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's random generator (default 0)")
    p.add_argument("--baseline", default="amortized",
                   help="the group label (inference type, plus settings where a group is split by them, e.g. "
                        "'amortized planner=cem') that the probability of improvement is taken against "
                        "(default amortized; nothing is reported when no group has that label)")
    p.add_argument("--until-episode", type=_positive_int, default=None, metavar="N",
                   help="compare the runs up to episode N only (e.g. runs of different lengths at equal data, or "
                        "a study's midpoint); a gap or calibration analysis of a model after episode N is left out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    runs, skipped = load_runs(args.run_dirs, args.metric, args.until_episode)
    if not runs:
        print(f"error: no valid run directory among {len(skipped)} given: each needs config.json and a "
              f"metrics.jsonl with {args.metric} values", file=sys.stderr)
        return 2
    by_group = grouped(runs)
    warnings = [w for key in sorted(by_group) for w in group_warnings(*key, by_group[key], args.metric)]
    for run in runs:
        warnings += analysis_flags(run)
        n = len(_series(run, args.metric)[1])
        if n < args.final_episodes:
            warnings.append(f"{run.dir}: only {n} {args.metric} value(s), fewer than --final-episodes "
                            f"{args.final_episodes}")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    groups = [group_entry(*key, by_group[key], args, rng) for key in sorted(by_group)]
    report = {"command": "python -m analysis.compare " + shlex.join(argv), "metric": args.metric,
              "final_episodes": args.final_episodes, "until_episode": args.until_episode, "level": LEVEL, "n_boot": args.n_boot,
              "bootstrap_seed": args.seed, "train_return_smoothing": SMOOTH, "skipped": skipped,
              "warnings": warnings, "groups": groups, "across_variants": across_variants(groups, rng, args.n_boot),
              "baseline": args.baseline, "improvement": improvement_over(groups, args.baseline, rng, args.n_boot),
              "differences": differences(by_group, args.baseline),
              "correlations": correlations(by_group, groups, rng, args.n_boot),
              "unsettled_fresh_fits": [run.dir.name for run in runs
                                       if run.analysis["gaps"] is not None
                                       and not settled_fresh_fits(run.analysis["gaps"])]}

    args.out.mkdir(parents=True, exist_ok=True)
    inferences = sorted({g["inference"] for g in groups})
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(inferences)}
    variants = sorted({g["task_variant"] for g in groups})
    curve_pngs = {v: f"curves_{_slug(v)}.png" for v in variants}
    for v in variants:
        plot_curves(v, [g for g in groups if g["task_variant"] == v], args.metric, colors, args.out / curve_pngs[v])
    horizon_pngs = {}
    for v in variants:
        png = f"calibration_{_slug(v)}.png"
        if plot_horizons(v, {inference: runs for (variant, inference), runs in sorted(by_group.items())
                             if variant == v}, colors, args.out / png):
            horizon_pngs[v] = png
    panels = {v: [{"inference": g["inference"], **g["final_return"]} for g in groups if g["task_variant"] == v]
              for v in variants}
    if report["across_variants"]:
        panels["all variants (pooled)"] = report["across_variants"]
    plot_final(panels, inferences, colors, f"final {args.metric}: IQM, {LEVEL:.0%} CI", args.out / "final_iqm.png")
    for name, entry in {k: c for k, c, _ in _correlated(report)}.items():
        plot_correlation(entry, args.metric, colors, args.out / f"scatter_{name}.png")
    write_atomic(args.out / "report.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    write_atomic(args.out / "report.md", lambda f: f.write(markdown(report, curve_pngs, horizon_pngs).encode()))
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
