"""Open an agent run for analysis without changing it: its config, the checkpoint's model and
posterior (frozen), the training replay (read-only), and held-out episodes collected with the
trained agent, which are cached under RUN_DIR/analysis/ so the gap and uncertainty commands see the same ones.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agent.checkpoint import load, write_atomic
from agent.config import AgentConfig
from agent.loop import Agent
from agent.replay import Replay
from world_models.base import SequenceBatch

HELDOUT_POLICIES = ("eval", "explore", "random")
HELDOUT_SEED = 2 * 10**9   # held-out episode i uses env seed HELDOUT_SEED + i: never a training or evaluation seed


def load_run(run_dir: Path, threads: int | None = 1) -> Agent:
    """The agent of a run directory at its last checkpoint, with a frozen model and posterior.
    Nothing in the run directory is written or removed."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run directory (no config.json)")
    if not (run_dir / "checkpoint.pt").exists():
        raise ValueError(f"{run_dir} has no checkpoint.pt yet: nothing trained to analyse")
    if threads:
        torch.set_num_threads(threads)
    cfg = AgentConfig.load(run_dir / "config.json")
    agent = Agent(cfg, run_dir)
    agent.load_state(load(agent.checkpoint_path), agent.checkpoint_path)
    agent.model.requires_grad_(False)
    agent.posterior.requires_grad_(False)
    agent.replay = Replay(run_dir / "episodes", read_only=True)
    return agent


def heldout_replay(agent: Agent, episodes: int, policy: str = "eval", progress: bool = True) -> Replay:
    """`episodes` episodes never trained on, collected by the trained agent (policy eval: planner without
    noise; explore: with the run's exploration noise; random: uniform actions), cached per checkpoint in
    RUN_DIR/analysis/heldout-<policy>-ep<episode>/ and reused by later calls."""
    if policy not in HELDOUT_POLICIES:
        raise ValueError(f"unknown held-out policy {policy!r}; valid choices: {', '.join(HELDOUT_POLICIES)}")
    replay = Replay(agent.run_dir / "analysis" / f"heldout-{policy}-ep{agent.episode}")
    todo = range(len(replay), episodes)
    for i in tqdm(todo, desc=f"held-out episodes ({policy})", unit="ep", disable=not progress or not todo):
        episode, _, _ = agent.run_episode(policy, seed=HELDOUT_SEED + i)
        replay.add_episode(episode)
    return replay


def windows(replay: Replay, n: int, length: int, seed: int) -> SequenceBatch:
    """n windows of `length` steps at uniform random positions (seeded), as the agent trains on them:
    each starts from the model's initial state."""
    batch, _ = replay.sample(n, length, np.random.default_rng(seed))
    return batch


def write_report(out: Path, stem: str, result: dict, markdown: str) -> None:
    """OUT/<stem>.json and OUT/<stem>.md, each written atomically."""
    write_atomic(out / f"{stem}.json", lambda f: f.write(json.dumps(result, indent=2).encode()))
    write_atomic(out / f"{stem}.md", lambda f: f.write(markdown.encode()))
