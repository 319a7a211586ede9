"""PlaNet's training loop with a swappable posterior (docs/definitions.md section 4).

Seed episodes with random actions; then per iteration: `train_steps` model updates with the chosen
posterior on sequences from the replay, one episode collected with CEM + Gaussian exploration noise,
and every `eval_every` episodes one evaluation episode without noise (for pixel runs also written as
eval_video.gif beside the model's open-loop prediction). After each episode: the
episode file, a metrics line, an atomic checkpoint and the learning-curve PNG, in that order, so a
run killed at any moment resumes from its last checkpoint with every finished episode counted once.
Episode k's environment, exploration and minibatch randomness is seeded from (seed, k), so a
resumed run continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from envs.registry import make_env
from planners.factory import make_planner
from planners.objectives import imagined_return
from world_models.posteriors import Objective, RefineSettings, agent_posterior
from world_models.rssm import RSSM
from world_models.training import gradient_step, make_adam

from .belief import Belief
from .checkpoint import KEEP_THE_RUN, check_resumable, load, remove_temp_files, save_atomic, trim_to_checkpoint
from .config import MAX_EPISODES, AgentConfig
from .replay import EpisodeBuilder, training_replay
from .report import plot_learning_curve
from .video import open_loop_video


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but no CUDA device is available; valid choices here: auto, cpu")
    return torch.device(name)


class Agent:
    def __init__(self, cfg: AgentConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.env = make_env(cfg.env, cfg.obs, cfg.action_repeat, seed=cfg.seed, missing_every=cfg.missing_every,
                            missing_prob=cfg.missing_prob, obs_noise=cfg.obs_noise, action_noise=cfg.action_noise)
        self.pixels = cfg.obs == "pixels"
        self.action_dim = self.env.action_space.shape[0]
        self.action_repeat = self.env.unwrapped.action_repeat
        torch.manual_seed(cfg.seed)   # parameter initialization
        self.model = RSSM(self.env.observation_space.shape, self.action_dim, cfg.deter, cfg.stoch, cfg.hidden,
                          obs_std=cfg.obs_std or None).to(self.device)
        self.posterior = agent_posterior(cfg, self.model).to(self.device)
        self.params = list(self.model.parameters()) + list(self.posterior.parameters())
        self.optimizer = make_adam(self.params, cfg.lr, cfg.adam_eps)
        self.planner = make_planner(cfg.planner, preset=cfg.planner_preset,
                                    **({"horizon": cfg.horizon} if cfg.horizon else {}))
        steps = (self.posterior.default_decision_steps if cfg.decision_refine_steps is None
                 else cfg.decision_refine_steps)
        lr = next(x for x in (cfg.decision_refine_lr, self.posterior.default_decision_lr, cfg.refine_lr)
                  if x is not None)
        decision = RefineSettings(steps=steps, lr=lr) if steps else None
        self.belief = Belief(self.model, self.posterior, decision, cfg.decision_window)
        self.episode, self.env_steps = 0, 0
        self.on_progress = None     # optional callback(phase, done, total) inside an episode (a progress display)

    # --- state on disk -------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save(self) -> None:
        save_atomic({"model": self.model.state_dict(), "posterior": self.posterior.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "episode": self.episode,
                     "env_steps": self.env_steps}, self.checkpoint_path)

    def load_state(self, state: dict, path: Path) -> None:
        """Take the model, posterior, optimizer and counters of a checkpoint `state` read from `path`;
        ValueError (one line) if it was written with other model settings than this run's config."""
        for name, module, growing in (("model", self.model, ()), ("posterior", self.posterior,
                                                                   self.posterior.growing_state)):
            _check_shapes(module.state_dict(), state[name], f"{path} does not match the run's config.json: {name}",
                          growing)
            module.load_state_dict(state[name])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as e:
            raise ValueError(f"{path} does not match the run's config.json: optimizer state: {e}") from None
        self.episode, self.env_steps = state["episode"], state["env_steps"]

    def restore(self) -> None:
        """Continue from the last checkpoint: refuse (ValueError, nothing changed) where that would drop finished
        episodes (checkpoint.check_resumable); trim what a crash left past it, remove temp files of killed writes,
        load the replay. A new run checkpoints here, before its first episode."""
        try:
            state = load(self.checkpoint_path) if self.checkpoint_path.exists() else None
            if state is not None:
                self.load_state(state, self.checkpoint_path)
        except ValueError as e:
            raise ValueError(f"{e}; {KEEP_THE_RUN}") from None
        check_resumable(self.run_dir, None if state is None else self.episode)
        trim_to_checkpoint(self.run_dir, self.episode)
        remove_temp_files(self.run_dir)
        self.replay = training_replay(self.run_dir / "episodes", self.cfg.obs)
        if state is None:
            self.save()

    # --- acting ------------------------------------------------------------------------------------
    def _obs_tensor(self, obs) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        return x / 255.0 - 0.5 if self.pixels else x

    def decide(self, obs, prev_action: torch.Tensor, valid: bool, gen: torch.Generator) -> np.ndarray:
        """One decision: the belief takes in x_t (and a_{t-1}), then CEM plans from it; returns a_t."""
        state = self.belief.update(self._obs_tensor(obs), prev_action, valid)
        objective = imagined_return(self.model, state, t=len(self.belief.obs), generator=gen)
        return self.planner.plan(objective, self.action_dim, gen).cpu().numpy()

    def run_episode(self, mode: str, seed: int) -> tuple[dict, float, float]:
        """mode: random | explore | eval. Returns (episode arrays, return, seconds spent planning)."""
        rng = np.random.default_rng(seed)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        obs, info = self.env.reset(seed=seed)
        builder = EpisodeBuilder(self.cfg.physics_state)
        builder.start(obs, info)
        self.belief.reset()
        self.planner.reset()
        prev = torch.zeros(self.action_dim, device=self.device)
        total, plan_seconds, done = 0.0, 0.0, False
        while not done:
            if mode == "random":
                action = rng.uniform(-1, 1, self.action_dim).astype(np.float32)
            else:
                t0 = time.perf_counter()
                action = self.decide(obs, prev, info.get("obs_valid", True), gen)
                plan_seconds += time.perf_counter() - t0
                if self.on_progress:
                    self.on_progress(f"{mode} step", len(builder) + 1, None)
                if mode == "explore":
                    action = np.clip(action + self.cfg.explore_noise * rng.standard_normal(self.action_dim), -1, 1)
            obs, reward, terminated, truncated, info = self.env.step(action)
            builder.add(action, reward, obs, info)
            prev = torch.as_tensor(action, dtype=torch.float32, device=self.device)
            total += float(reward)
            done = terminated or truncated
        return builder.finish(), total, plan_seconds

    # --- learning ----------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.episode])
        objective = Objective(free_nats=cfg.free_nats)
        sums: dict[str, float] = {}
        length = min(cfg.seq_len, min(len(e["reward"]) for e in self.replay.episodes))
        self.posterior.loss.new_round()      # e.g. refine_every counts the updates of each episode from 1
        for i in range(cfg.train_steps):
            batch, start = self.replay.sample(cfg.batch_size, length, rng)
            batch.offset = torch.as_tensor(start)
            batch = batch.to(self.device)
            loss, info = self.posterior.training_loss(self.model, batch, objective)
            value = gradient_step(loss, self.params, self.optimizer, cfg.grad_clip,
                                  f"model update {i + 1} of {cfg.train_steps}")
            if self.on_progress:
                self.on_progress("train", i + 1, cfg.train_steps)
            for k, v in {"loss": value, **info}.items():
                sums[k] = sums.get(k, 0.0) + v
        return {k: v / cfg.train_steps for k, v in sums.items()}

    # --- the loop ----------------------------------------------------------------------------------
    def step(self) -> dict:
        """One iteration: train (after the seed episodes), collect an episode, maybe evaluate."""
        cfg, k = self.cfg, self.episode
        torch.manual_seed(cfg.seed * 1_000_003 + k)
        record: dict = {"episode": k + 1}
        t0 = time.perf_counter()
        if k >= cfg.seed_episodes:
            record.update(self.train())
        record["train_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mode = "random" if k < cfg.seed_episodes else "explore"
        episode, ret, plan_seconds = self.run_episode(mode, seed=cfg.seed * 1_000_003 + k)
        record.update(train_return=ret, collect_seconds=time.perf_counter() - t0, plan_seconds=plan_seconds)
        self.replay.add_episode(episode)
        self.env_steps += (len(episode["reward"]) - 1) * self.action_repeat
        n_eval = cfg.eval_episodes_after(k + 1)
        if n_eval:
            t0 = time.perf_counter()
            # env seeds apart from training's and from other evaluations' (config.py, MAX_EVAL_EPISODES)
            seed = lambda i: 10**9 + cfg.seed * 1_000_003 + k + i * MAX_EPISODES
            evaluation, first, _ = self.run_episode("eval", seed=seed(0))
            returns = [first] + [self.run_episode("eval", seed=seed(i))[1] for i in range(1, n_eval)]
            record.update(eval_return=float(np.mean(returns)), eval_episodes=n_eval,
                          eval_seconds=time.perf_counter() - t0)
            if n_eval > 1:
                record.update(eval_returns=returns, eval_return_se=float(np.std(returns, ddof=1) / np.sqrt(n_eval)))
            if self.pixels:   # the evaluation episode beside the model's open-loop prediction
                _, mse = open_loop_video(self.model, self.belief.encoder, evaluation, self.run_dir / "eval_video.gif")
                record["open_loop_mse"] = float(np.nanmean(mse)) if mse else None
        record["env_steps"] = self.env_steps
        self.episode += 1
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self.save()
        plot_learning_curve(self.run_dir, self.cfg)
        return record


def _check_shapes(own: dict, stored: dict, where: str, growing: tuple[str, ...] = ()) -> None:
    """ValueError naming the first tensor whose name or shape differs between a module's and a stored state; of the
    `growing` entries (leading sizes grow with the data seen) only the rank and the last size must agree."""
    for key in sorted(set(own) | set(stored)):
        if key not in stored or key not in own:
            place = "the config's model but not in the checkpoint" if key not in stored else \
                "the checkpoint but not in the config's model"
            raise ValueError(f"{where} {key} is in {place} (was config.json edited or taken from another run?)")
        fixed = (lambda shape: (len(shape), shape[-1:])) if key in growing else tuple
        if fixed(tuple(own[key].shape)) != fixed(tuple(stored[key].shape)):
            raise ValueError(f"{where} {key} has shape {tuple(stored[key].shape)} in the checkpoint but "
                             f"{tuple(own[key].shape)} with config.json's settings (was config.json edited or "
                             f"taken from another run?)")
