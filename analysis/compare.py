"""Compare agent runs by task variant and inference type: learning curves, final returns (IQM with percentile-bootstrap
confidence intervals over seeds), the probability of improvement over a baseline, gaps, calibration, their rank
correlation with the final return across runs, and wall-clock, written to OUT/report.md, OUT/report.json and PNGs.

    python -m analysis.compare runs/* --out results/compare [--metric eval_return] [--final-episodes K]

What a run holds: analysis/run_results.py; the statistics: analysis/compare_numbers.py; the figures:
analysis/compare_plots.py; report.md: analysis/compare_markdown.py.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np

from agent.checkpoint import write_atomic
from analysis.compare_markdown import markdown
from analysis.compare_numbers import (LEVEL, SMOOTH, across_variants, computed_correlations, correlations, differences,
                                      group_entry, improvement_over)
from analysis.compare_plots import inference_colors, plot_correlation, plot_curves, plot_final, plot_horizons
from analysis.run_results import (analysis_flags, group_warnings, grouped, load_runs, metric_series,
                                  settled_fresh_fits)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


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
        n = len(metric_series(run, args.metric)[1])
        if n < args.final_episodes:
            warnings.append(f"{run.dir}: only {n} {args.metric} value(s), fewer than --final-episodes "
                            f"{args.final_episodes}")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    groups = [group_entry(*key, by_group[key], args, rng) for key in sorted(by_group)]
    report = {"command": "python -m analysis.compare " + shlex.join(argv), "metric": args.metric,
              "final_episodes": args.final_episodes, "until_episode": args.until_episode, "level": LEVEL,
              "n_boot": args.n_boot,
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
    colors = inference_colors(inferences)
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
    for name, entry in {k: c for k, c, _ in computed_correlations(report)}.items():
        plot_correlation(entry, args.metric, colors, args.out / f"scatter_{name}.png")
    write_atomic(args.out / "report.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    write_atomic(args.out / "report.md", lambda f: f.write(markdown(report, curve_pngs, horizon_pngs).encode()))
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
