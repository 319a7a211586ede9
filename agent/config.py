"""The agent's settings, their CPU defaults and their validation (one place for both)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

from envs.registry import OBS_TYPES, check_variant_settings, valid_env_names
from planners.factory import PLANNERS
from world_models.posteriors import POSTERIORS

DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("offline", "online", "disabled")
PLANNER_PRESETS = ("cpu", "planet")


@dataclass
class AgentConfig:
    env: str = "cartpole"
    obs: str = "state"
    inference: str = "amortized"
    seed: int = 0
    episodes: int = 100             # episodes collected in all, seed episodes included
    seed_episodes: int = 5          # random-action episodes first (PlaNet: 5)
    train_steps: int = 100          # model updates per collected episode (PlaNet's C = 100)
    batch_size: int = 32            # PlaNet: 50 (the CPU defaults are sized to finish cartpole in < 60 min on 2 cores)
    seq_len: int = 32               # PlaNet: 50
    deter: int = 128                # GRU size (PlaNet: 200)
    stoch: int = 30                 # stochastic latent size
    hidden: int = 128               # PlaNet: 200
    free_nats: float = 3.0
    obs_std: float = 0.0            # 0 learns one emission std per observation dimension; > 0 fixes it (PlaNet: 1)
    lr: float = 1e-3
    adam_eps: float = 1e-4
    grad_clip: float = 1000.0
    explore_noise: float = 0.3      # std of the Gaussian noise added to planned actions while collecting
    eval_every: int = 10            # an evaluation episode (no noise) every this many episodes
    planner: str = "cem"
    planner_preset: str = "cpu"     # cpu: 300 candidates x 5 iterations; planet: 1000 x 10
    horizon: Optional[int] = None   # overrides the preset's
    refine_steps: int = 3           # semi_amortized: K at training time; per_sequence: warm-started steps per update
    refine_lr: float = 0.03         # 0.1 made semi_amortized training degrade after ~300 updates (docs/agent)
    decision_refine_steps: int = 0  # semi_amortized / per_sequence: refinement at each decision (per_sequence: >= 1)
    decision_window: int = 8        # steps re-inferred at each decision
    action_repeat: Optional[int] = None
    missing_every: Optional[int] = None
    missing_prob: Optional[float] = None
    obs_noise: float = 0.0
    action_noise: float = 0.0
    device: str = "auto"
    wandb: str = "offline"
    physics_state: bool = True      # store the true physical state per step in the replay's files (calibration read-out)

    def __post_init__(self):
        choice = lambda name, valid: (getattr(self, name) in valid) or _fail(
            f"unknown {name} {getattr(self, name)!r}; valid choices: {', '.join(valid)}")
        choice("env", valid_env_names())
        choice("obs", OBS_TYPES)
        choice("inference", POSTERIORS)
        choice("planner", PLANNERS)
        choice("planner_preset", PLANNER_PRESETS)
        choice("device", DEVICES)
        choice("wandb", WANDB_MODES)
        for name in ("episodes", "train_steps", "batch_size", "seq_len", "deter", "stoch", "hidden", "eval_every",
                     "decision_window"):
            if getattr(self, name) < 1:
                _fail(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("seed_episodes", "refine_steps", "decision_refine_steps", "free_nats", "explore_noise", "seed",
                     "obs_std"):
            if getattr(self, name) < 0:
                _fail(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.seed_episodes < 1:
            _fail("seed_episodes must be >= 1: the model needs data before its first update")
        check_variant_settings(self.action_repeat, self.missing_every, self.missing_prob, self.obs_noise,
                               self.action_noise)
        if self.inference == "per_sequence" and self.decision_refine_steps < 1:
            _fail("per_sequence has no encoder: set decision_refine_steps >= 1 (its belief is optimized at each decision)")

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "AgentConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read run config {path}: {e}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"run config {path} has unknown settings: {', '.join(unknown)}")
        return cls(**data)


def _fail(message: str):
    raise ValueError(message)
