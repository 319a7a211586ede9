"""Agent episodes per core-hour: every posterior, under the old defaults (profile v1) and the current ones, side by
side in one run, with each episode's time split into training, planning and the environment, and the model FLOPs
per decision.

For each (posterior, profile) a fresh agent (cartpole swingup from state by default) runs --episodes episodes
exactly as run_agent.py runs it (Agent(cfg, run_dir), restore(), step() per episode; without the wandb logger):
the seed episodes act at random, the rest train (cfg.train_steps model updates) then collect with the planner.
The entries run round-robin, one episode each in turn, so that load changes on a shared machine hit all alike.
From the medians over the trained episodes, a whole run of cfg.episodes episodes is estimated as

    seconds = seed_episodes x (random episode) + (episodes - seed_episodes) x (trained episode)
              + evaluation episodes x (a trained episode's collection, planner without noise)

and episodes per core-hour = 3600 x episodes / seconds (one thread per process; with --device cuda, per GPU-hour with
one CPU thread beside it). The ratio of each posterior's
figure under the current defaults to v1's is the speed-up, valid on any machine since both ran in the same
rounds. FLOPs per decision: the sequences the planner evaluated (counted) x horizon x one imagined step's FLOPs
(bench_agent.rssm_step_flops). Whether the current defaults reach the same return is for full runs to show
(docs/throughput).

    PYTHONPATH=. python benchmarks/bench_throughput.py --episodes 8 --json docs/throughput/bench.json
    PYTHONPATH=. python benchmarks/bench_throughput.py --device cuda --profiles default --posteriors amortized
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent import parse_settings, rssm_step_flops  # noqa: E402

from agent.config import PROFILES, profile_config  # noqa: E402
from agent.loop import Agent  # noqa: E402
from planners.timing import CountingPlanner  # noqa: E402
from world_models.posteriors import POSTERIORS  # noqa: E402

PHASES = ("train_seconds", "plan_seconds", "env_seconds")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--posteriors", nargs="+", default=list(POSTERIORS), choices=POSTERIORS)
    p.add_argument("--profiles", nargs="+", default=["v1", "default"], metavar="PROFILE[:key=value,...]",
                   help=f"profiles ({', '.join(PROFILES)}), each optionally with settings changed, e.g. "
                        f"default:refine_every=4")
    p.add_argument("--episodes", type=int, default=8, help="episodes per entry, the seed episodes included (the "
                   "profile's seed_episodes, 5 by default, are random; the rest are timed)")
    p.add_argument("--env", default="cartpole")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (one per process: a core)")
    p.add_argument("--json", type=Path, help="write every episode's record and the summary here")
    return p.parse_args(argv)


class Entry:
    """One (posterior, profile) agent in a temporary run directory, stepped one episode at a time."""

    def __init__(self, posterior: str, profile: str, env: str, device: str, episodes: int):
        self.name = f"{posterior}/{profile}"
        name, _, text = profile.partition(":")
        settings = parse_settings(text)
        fixed = dict(inference=posterior, env=env, device=device, wandb="disabled")
        if set(settings) & set(fixed):
            raise ValueError(f"profile {profile!r} sets {', '.join(sorted(set(settings) & set(fixed)))}: give those "
                             f"with --posteriors, --env and --device")
        self.cfg = profile_config(name, **settings, **fixed)
        self.episodes = episodes
        self.dir = tempfile.TemporaryDirectory()
        self.agent = Agent(self.cfg, Path(self.dir.name))
        self.agent.restore()
        self.agent.planner = self.counter = CountingPlanner(self.agent.planner)
        self.records: list[dict] = []

    @property
    def done(self) -> bool:
        return self.agent.episode >= self.episodes

    def step(self) -> None:
        t0 = time.perf_counter()
        record = self.agent.step()
        if self.cfg.device == "cuda":
            torch.cuda.synchronize()
        # the episode without its evaluation episodes (those are priced separately below)
        record["episode_seconds"] = time.perf_counter() - t0 - record.get("eval_seconds", 0.0)
        record["env_seconds"] = record["collect_seconds"] - record["plan_seconds"]
        self.records.append({k: v for k, v in record.items() if isinstance(v, (int, float))})

    def summary(self) -> dict:
        cfg = self.cfg
        trained = [r for r in self.records if r["episode"] > cfg.seed_episodes]
        random_ = [r for r in self.records if r["episode"] <= cfg.seed_episodes]
        if not trained:
            raise ValueError(f"--episodes {self.episodes} leaves no trained episode after {cfg.seed_episodes} seed "
                             f"episodes")
        med = {k: statistics.median(r[k] for r in trained) for k in ("episode_seconds", "collect_seconds") + PHASES}
        evaluations = sum(cfg.eval_episodes_after(e) for e in range(1, cfg.episodes + 1))
        run_seconds = (cfg.seed_episodes * statistics.median(r["episode_seconds"] for r in random_)
                       + (cfg.episodes - cfg.seed_episodes) * med["episode_seconds"]
                       + evaluations * med["collect_seconds"])
        planner = self.counter.settings
        sequences = self.counter.sequences / max(self.counter.decisions, 1)
        step_flops = rssm_step_flops(cfg.stoch, self.agent.action_dim, cfg.deter, cfg.hidden)
        return {"median_trained_episode": med, "run_episodes": cfg.episodes, "run_evaluations": evaluations,
                "run_seconds": run_seconds, "episodes_per_core_hour": 3600 * cfg.episodes / run_seconds,
                "sequences_per_decision": sequences,
                "gflop_per_decision": sequences * planner.horizon * step_flops / 1e9,
                "share": {k: med[k] / med["episode_seconds"] for k in PHASES},
                "settings": {k: getattr(cfg, k) for k in ("planner", "planner_preset", "train_steps", "refine_steps",
                                                         "refine_every")}}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    entries = [Entry(post, prof, args.env, args.device, args.episodes) for post in args.posteriors
               for prof in args.profiles]
    out = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None, "threads": args.threads,
           "env": args.env, "episodes": args.episodes, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    while not all(e.done for e in entries):
        for e in entries:
            if not e.done:
                e.step()
                r = e.records[-1]
                print(f"{e.name:44s} episode {r['episode']:3d}: {r['episode_seconds']:6.1f} s (train "
                      f"{r['train_seconds']:.1f}, plan {r['plan_seconds']:.1f}, env {r['env_seconds']:.1f})", flush=True)
        if args.json:       # after every round, so that a stopped benchmark keeps what it measured
            write(args.json, {**out, "records": {e.name: e.records for e in entries}})
    summaries = {e.name: e.summary() for e in entries}
    print(f"\nepisodes per core-hour ({args.env}, {args.device}, {args.threads} thread(s); a {entries[0].cfg.episodes}"
          f"-episode run estimated from the median of {args.episodes - entries[0].cfg.seed_episodes} trained episodes)")
    print(f"{'posterior/profile':44s} {'ep/core-h':>9s} {'x v1':>6s} {'s/episode':>9s} {'train':>6s} {'plan':>6s} "
          f"{'env':>6s} {'GFLOP/decision':>14s}")
    for name, s in summaries.items():
        posterior = name.split("/")[0]
        base = summaries.get(f"{posterior}/v1")
        ratio = s["episodes_per_core_hour"] / base["episodes_per_core_hour"] if base else float("nan")
        s["speedup_over_v1"] = ratio
        med = s["median_trained_episode"]
        print(f"{name:44s} {s['episodes_per_core_hour']:9.0f} {ratio:6.2f} {med['episode_seconds']:9.1f} "
              + " ".join(f"{med[k]:6.1f}" for k in PHASES) + f" {s['gflop_per_decision']:14.2f}")
    if args.json:
        write(args.json, {**out, "summaries": summaries, "records": {e.name: e.records for e in entries}})
    return 0


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
