"""Planners side by side on one trained agent's frozen world model: true evaluation returns in the environment,
model FLOPs and seconds per decision.

Each planner (NAME:PRESET[:key=value,...], e.g. `cem:cpu`, `icem:cpu`, `icem:cpu:noise_beta=0`) drives the run's
frozen model and posterior (analysis.run_loading.load_run) for --episodes evaluation episodes (planner without
exploration noise). Every planner sees the same env seeds (analysis.run_loading.HELDOUT_SEED + i: never a training
or evaluation seed of the run), so returns are paired per episode; the table gives the mean return and its
standard error, the paired difference to the first planner with its standard error, the evaluated sequences per
decision (counted at the objective) and model FLOPs per decision (sequences x horizon x one imagined step's
FLOPs, benchmarks/bench_agent.rssm_step_flops). Planning quality at a fixed model is what a planner change can
alter; whether a run trained with the new planner learns as well is a separate question (learning curves).

    PYTHONPATH=. python benchmarks/bench_planners.py RUN_DIR --planners cem:cpu icem:cpu --episodes 10 \
        --json docs/bench_planners/planners.json
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent import parse_settings, rssm_step_flops  # noqa: E402

from analysis.run_loading import HELDOUT_SEED, load_run  # noqa: E402
from planners.factory import make_planner  # noqa: E402
from planners.timing import CountingPlanner  # noqa: E402


def parse_spec(spec: str):
    """NAME:PRESET[:key=value,...] -> (name, preset, settings)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"planner spec {spec!r} is not NAME:PRESET[:key=value,...] (e.g. icem:cpu:noise_beta=0)")
    return parts[0], parts[1], parse_settings(parts[2] if len(parts) == 3 else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a trained agent's run directory (config.json, checkpoint.pt)")
    p.add_argument("--planners", nargs="+", default=["cem:cpu", "icem:cpu"], help="NAME:PRESET[:key=value,...]")
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes per planner (same env seeds)")
    p.add_argument("--json", type=Path, help="write per-episode returns and the summary here")
    args = p.parse_args(argv)
    agent = load_run(args.run_dir)
    cfg = agent.cfg
    step_flops = rssm_step_flops(cfg.stoch, agent.action_dim, cfg.deter, cfg.hidden)
    results = {}
    for spec in args.planners:
        name, preset, settings = parse_spec(spec)
        run_horizon = {"horizon": cfg.horizon} if cfg.horizon else {}      # the run's own, as the agent plans
        planner = CountingPlanner(make_planner(name, preset=preset, **{**run_horizon, **settings}))
        agent.planner = planner
        returns, seconds = [], 0.0
        for i in tqdm(range(args.episodes), desc=spec, unit="ep"):
            _, ret, plan_seconds = agent.run_episode("eval", seed=HELDOUT_SEED + i)
            returns.append(ret)
            seconds += plan_seconds
        sequences = planner.sequences / planner.decisions
        results[spec] = {"returns": returns, "mean": statistics.mean(returns),
                         "se": statistics.stdev(returns) / math.sqrt(len(returns)) if len(returns) > 1 else None,
                         "sequences_per_decision": sequences,
                         "gflop_per_decision": sequences * planner.settings.horizon * step_flops / 1e9,
                         "seconds_per_decision": seconds / planner.decisions}
    first = results[args.planners[0]]["returns"]
    print(f"\n{args.run_dir} (episode {agent.episode}), {args.episodes} evaluation episodes per planner, same seeds")
    print(f"{'planner':34s} {'return':>15s} {'minus first':>15s} {'seq/decision':>12s} {'GFLOP':>7s} {'s/decision':>10s}")
    for spec, r in results.items():
        diff = [a - b for a, b in zip(r["returns"], first)]
        r["paired_difference"] = statistics.mean(diff)
        r["paired_difference_se"] = statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else None
        se = lambda x: "" if x is None else f" ± {x:.1f}"
        print(f"{spec:34s} {r['mean']:8.1f}{se(r['se']):>7s} {r['paired_difference']:8.1f}"
              f"{se(r['paired_difference_se']):>7s} {r['sequences_per_decision']:12.0f} {r['gflop_per_decision']:7.3f} "
              f"{r['seconds_per_decision']:10.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"run_dir": str(args.run_dir), "episode": agent.episode,
                                         "episodes": args.episodes, "planners": results,
                                         "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
