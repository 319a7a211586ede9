"""Seconds per agent episode on each compute device: the default agent (agent/config.py) run for a few episodes
on `cpu` and on `cuda`, one after the other in one process, with the time of each episode split as the agent
records it (model training, planning, the rest of collection, evaluation).

The agent is driven as run_agent.py drives it (Agent(cfg, run_dir), restore(), then step() per episode) but without the
wandb logger, so that it runs where wandb is not installed (a bare GPU machine). Run as a script:

    PYTHONPATH=. python benchmarks/bench_device.py --episodes 10 --devices cpu cuda --json out.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch

from agent.config import AgentConfig
from agent.loop import Agent

PHASES = ("train_seconds", "plan_seconds", "collect_seconds", "eval_seconds")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--episodes", type=int, default=10, help="episodes per device (seed episodes included)")
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    p.add_argument("--inference", nargs="+", default=[AgentConfig.inference], help="posteriors to run")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the CPU runs use one core by default)")
    p.add_argument("--json", help="write the per-episode records and the summary here")
    return p.parse_args(argv)


def run_episodes(inference: str, device: str, episodes: int) -> list[dict]:
    """Per-episode records of a fresh default agent on `device`, each with its wall-clock `episode_seconds`."""
    cfg = AgentConfig(inference=inference, device=device, episodes=episodes)
    records = []
    with tempfile.TemporaryDirectory() as run_dir:
        agent = Agent(cfg, run_dir)
        agent.restore()                  # a new run: loads the (empty) replay and checkpoints
        while agent.episode < cfg.episodes:
            t0 = time.perf_counter()
            record = agent.step()
            if device == "cuda":
                torch.cuda.synchronize()
            record["episode_seconds"] = time.perf_counter() - t0
            records.append({k: v for k, v in record.items() if isinstance(v, (int, float))})
            print(f"{inference} {device} episode {record['episode']}: {record['episode_seconds']:.1f} s "
                  + " ".join(f"{k[:-8]} {record.get(k, 0.0):.1f}" for k in PHASES), flush=True)
    return records


def summarize(records: list[dict], seed_episodes: int) -> dict:
    """Median seconds per trained episode (the seed episodes train and plan nothing), total and per phase."""
    trained = [r for r in records if r["episode"] > seed_episodes] or records
    return {k: statistics.median(r.get(k, 0.0) for r in trained) for k in ("episode_seconds",) + PHASES}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "threads": args.threads,
           "episodes": args.episodes, "runs": {}}
    for inference in args.inference:
        for device in args.devices:
            records = run_episodes(inference, device, args.episodes)
            out["runs"][f"{inference}/{device}"] = {"records": records,
                                                    "median": summarize(records, AgentConfig.seed_episodes)}
    print("\nmedian seconds per trained episode:")
    for name, run in out["runs"].items():
        print(f"  {name:32s} " + " ".join(f"{k} {v:.2f}" for k, v in run["median"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
