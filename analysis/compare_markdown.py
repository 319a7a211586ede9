"""The comparison's report.md (analysis/compare.py): its tables, and the section "what the data shows and what it
does not", which reads every interval against the value of no effect."""
from __future__ import annotations

from analysis.compare_numbers import HORIZON_BAND_SEEDS, LAST, LEVEL, SMOOTH, computed_correlations
from analysis.markdown import table
from analysis.run_results import CALIBRATION, GAP_COLUMNS, TARGETS
from analysis.stats import smallest_rank_test_p


def _fmt(x, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def with_ci(value: float, ci, digits: int = 2) -> str:
    """'value [low, high]', or the value alone where there is no interval."""
    return f"{value:.{digits}f}" + ("" if ci is None else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]")


def _iqm_ci(stat: dict, no_ci: str = "one seed") -> str:
    return with_ci(stat["iqm"], stat["iqm_ci"], 1) + (f" ({no_ci}: no CI)" if stat["iqm_ci"] is None else "")


def _mean_ci(stat: dict, digits: int) -> str:
    """'mean [low, high] (n)' of an over_seeds entry, the mean alone for one seed, '–' when no seed has the value."""
    return f"{with_ci(stat['mean'], stat['ci'], digits)} ({stat['n']})" if stat["n"] else "–"


def _excludes(ci, null: float) -> bool:
    """Whether an interval excludes the value of no effect."""
    return ci is not None and (ci[0] > null or ci[1] < null)


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
    runs allow an exact rank test to reach p < 1 - LEVEL), and first the list of those that exclude it; the chance
    count leaves out the intervals not read."""
    base = f"`{report['baseline']}`"
    # each row: its cells, and whether it is read as excluding no effect (listed first)
    rows = [([f"`{e['inference']}` vs {base}", ", ".join(e["task_variants"]), "final return: P(X > baseline)",
              f"{e['n'][0]}, {e['n'][1]}", with_ci(e["probability"], e["ci"]), _improvement_reading(e)],
             _excludes(e["ci"], 0.5) and not _too_few_to_read(e)) for e in report["improvement"]]
    rows += [([f"`{d['inference']}` vs {base}", d["task_variant"], f"{d['title']}: X - baseline",
               f"{d['n'][0]}, {d['n'][1]}", with_ci(d["difference"], d["ci"], 3),
               _reading(d["ci"], 0.0, *(("X better", "X worse") if d["higher_is_better"]
                                        else ("X worse", "X better")))],
              _excludes(d["ci"], 0.0)) for d in report["differences"]]
    # within a group, against 0: does training the encoder with the model cost it what a fresh fit shows?
    excess = [(g, s) for g in report["groups"] if (s := g["gaps"]["encoder_excess"])["n"]]
    own = [([f"`{g['inference']}`", g["task_variant"], str(s["n"]), with_ci(s["mean"], s["ci"], 3),
             _reading(s["ci"], 0.0, "own encoder worse", "own encoder better", "one run")], _excludes(s["ci"], 0.0))
           for g, s in excess]
    correlated = computed_correlations(report)
    corr = [([c["title"], v["task_variant"], str(v["runs"]), with_ci(v["spearman"], v["ci"]),
              _reading(v["ci"], 0.0, "larger values go with higher returns", "larger values go with lower returns",
                       "fewer than 4 runs")], _excludes(v["ci"], 0.0)) for _, c, v in correlated]
    if not rows and not own and not corr:
        return []
    n_intervals = sum(e["ci"] is not None for e in [*(i for i in report["improvement"] if not _too_few_to_read(i)),
                                                    *report["differences"], *(s for _, s in excess),
                                                    *(v for _, _, v in correlated)])
    by_chance = n_intervals * (1 - LEVEL)   # expected exclusions if nothing differed
    chance = (f"with {n_intervals} intervals about {by_chance:.1f} would exclude that value by chance "
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
    excluded = ([f"- {c[0]}, {c[1]}: {c[2]} = {c[4]} (runs {c[3]}): {c[5]}" for c, x in rows if x]
                + [f"- {c[0]}, {c[1]}: own minus fresh amortization gap = {c[3]} ({c[2]} runs): {c[4]}"
                   for c, x in own if x]
                + [f"- final return against {c[0]}, {c[1]}: Spearman = {c[3]} ({c[2]} runs): {c[4]}"
                   for c, x in corr if x])
    if n_intervals:
        verb = "excludes" if len(excluded) == 1 else "exclude"
        lines += [f"**{len(excluded)} of the {n_intervals} intervals {verb} it** (about {by_chance:.1f} would by "
                  "chance alone)" + (":" if excluded else "."), "",
                  *excluded, *([""] if excluded else [])]
    if rows:
        lines += table(["comparison", "task variants", "measure", "runs (X, baseline)", f"value [{LEVEL:.0%} CI]",
                         "reading"], [c for c, _ in rows])
    if own:
        lines += ["Within each group, against 0: the run's own amortization gap minus that of a fresh encoder of its "
                  "kind fitted to the frozen final model (nats / step, held out; Student-t interval over seeds, "
                  "runs with settled fresh fits only). Above 0, training the encoder jointly with the model (free "
                  "nats included) left it worse than its family can do on that model.", ""]
        lines += table(["inference", "task variant", "runs", f"own minus fresh [{LEVEL:.0%} CI]", "reading"],
                       [c for c, _ in own])
    if corr:
        lines += table(["final return against", "task variant", "runs", f"Spearman [{LEVEL:.0%} CI]", "reading"],
                       [c for c, _ in corr])
    return lines


# how the per-group tables (gaps, calibration, noise, wall-clock) summarize their seeds
SEED_MEAN = (f"mean over seeds [{LEVEL:.0%} Student-t interval, mean -+ t * standard error across seeds; none for "
             "one seed] (seeds with the value)")


def markdown(report: dict, curve_pngs: dict[str, str], horizon_pngs: dict[str, str]) -> str:
    metric, k, groups = report["metric"], report["final_episodes"], report["groups"]
    lines = ["# Run comparison", "", "Produced by:", "", "```bash", report["command"], "```", "",
             f"{sum(g['n_seeds'] for g in groups)} runs in {len(groups)} groups (task variant x inference type); "
             "the seeds of a group are its replicates."
             + ("" if report.get("until_episode") is None
                else f" Every run is cut at episode {report['until_episode']}."),
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
                          with_ci(e["probability"], e["ci"])] for e in report["improvement"]])
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
    shown = computed_correlations(report)
    if shown:
        lines += ["## Across runs: what goes with the final return", "",
                  f"One point per run with the value; per task variant, Spearman's rank correlation with a {LEVEL:.0%} "
                  "bootstrap CI (runs resampled). Never pooled over variants, which move returns and gaps together. "
                  "A correlation across runs of different inference types mixes the effect of the inference type with "
                  "that of the quantity.", ""]
        lines += table(["final return against", "task variant", "runs", "Spearman [CI]"],
                        [[c["title"], v["task_variant"], str(v["runs"]), with_ci(v["spearman"], v["ci"])]
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
