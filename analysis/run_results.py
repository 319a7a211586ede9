"""One agent run's results as the comparison reads them (analysis/compare.py): its config, metrics and analyses
(Run), the runs grouped by task variant and inference type, and each value a run is measured by on its frozen final
model (gaps, calibration: GAP_COLUMNS, MEASURES)."""
from __future__ import annotations

import glob
import json
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from agent.config import AgentConfig
from agent.report import read_metrics
from world_models.posteriors.registry import SMOOTHER

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
    # the conditioning gap L[q*_smoother] - L[q*_filter]: what filtering (no future observations) costs on the run's
    # model; lower is better for an agent that filters at each decision
    **{f"{gap}_gap": (f"{GAP_COLUMNS[gap][0]} (nats / step, held out)", GAP_COLUMNS[gap][1], False)
       for gap in ("inference", "amortization", "conditioning")},
    "encoder_excess": ("own amortization gap minus a fresh encoder's (nats / step, held out)",
                       GAP_COLUMNS["encoder_excess"][1], False),
    "obs_nll": ("open-loop observation NLL (nats, horizons 1-50)",
                lambda run: lookup_number(run.analysis["uncertainty"], ("summary", "obs", "nll")), False),
    # CRPS beside the NLL: a proper score in the observations' units that one overconfident long horizon cannot
    # move by hundreds, and that also rewards sharp predictions where the NLL rewards wide ones
    "obs_crps": ("open-loop observation CRPS (mean over dimensions, horizons 1-50)",
                 lambda run: lookup_number(run.analysis["uncertainty"], ("summary", "obs", "crps")), False),
    "coverage_error": ("observation coverage error: (|c50 - 0.5| + |c90 - 0.9|) / 2",
                       lambda run: coverage_error(run.analysis["uncertainty"], "obs"), False),
}
CORRELATES = ("amortization_gap", "coverage_error")  # what each run's final return is set against in scatter plots
SECONDS = ("train_seconds", "collect_seconds", "eval_seconds")  # planning is part of collecting


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
    later = lambda a: until_episode is not None and (lookup_number(a, ("checkpoint_episode",))
                                                     or math.inf) > until_episode
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
    finals = sorted({metric_series(r, metric)[0][-1] for r in runs})
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


def metric_series(run: Run, key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in run.rows if r.get(key) is not None]
    return [r["episode"] for r in rows], [float(r[key]) for r in rows]


def final_value(run: Run, metric: str, k: int) -> float:
    """Mean of the run's last k values of `metric` (fewer if it has fewer)."""
    return float(np.mean(metric_series(run, metric)[1][-k:]))


def lookup(data, keys):
    """data[k1][k2]..., or None where a level is missing."""
    for k in keys:
        if not isinstance(data, dict) or k not in data:
            return None
        data = data[k]
    return data


def lookup_number(data, keys):
    """data[k1][k2]... as a finite float, or None where a level is missing or the value is not a number."""
    x = lookup(data, keys)
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) else None


def _heldout(run: Run, keys: tuple[str, ...]) -> float | None:
    """A per-step mean on held-out sequences from the run's gaps.json (keys below "heldout"), or None."""
    return lookup_number(run.analysis["gaps"], ("heldout", *keys, "mean_per_step"))


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
    return lookup(gaps, ("settings", "encoder_lr_schedule")) == "cosine"


def coverage_error(uncertainty: dict | None, target: str) -> float | None:
    """Mean absolute miscalibration of the 50% and 90% predictive intervals of `target` (0 = calibrated)."""
    c50, c90 = (lookup_number(uncertainty, ("summary", target, m)) for m in ("coverage50", "coverage90"))
    return None if c50 is None or c90 is None else (abs(c50 - 0.5) + abs(c90 - 0.9)) / 2


def learned_obs_std(uncertainty: dict | None) -> float | None:
    """The model's observation noise std, sqrt of its mean emission variance (analysis.uncertainty's noise.model)."""
    var = lookup_number(uncertainty, ("noise", "model", "emission_var"))
    return None if var is None else var ** 0.5
