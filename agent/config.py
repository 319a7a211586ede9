"""The agent's settings, their CPU defaults and their validation (one place for both)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

from envs.checks import Range, check_ranges
from envs.registry import OBS_TYPES, check_variant_settings, valid_env_names
from planners.factory import PLANNERS, presets
from world_models.posteriors import POSTERIORS

from .checkpoint import write_atomic

DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("offline", "online", "disabled")
PLANNER_PRESETS = tuple(sorted({p for name in PLANNERS for p in presets(name)}))
MAX_EPISODES = 100_000     # also keeps the per-episode env seeds of training, evaluation and analysis disjoint
MAX_SEED = 998             # seed * 1_000_003 + episode < 1e9 (training), + 1e9 (evaluation), 2e9 + i (held-out)
REFINE_EVERY = 5           # the default refine_every (a config that sets another for a posterior that ignores it warns)
MAX_EVAL_EPISODES = 10     # evaluation episode i after episode k: 1e9 + seed * 1_000_003 + k + i * MAX_EPISODES,
#                            under 1e9 + 998 * 1_000_003 + 10 * MAX_EPISODES < 2e9 (seed 999 would reach 2e9 + 2996)


@dataclass
class AgentConfig:
    env: str = "cartpole"
    obs: str = "state"
    inference: str = POSTERIORS[0]  # the registry's first: amortized
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
    eval_episodes: int = 10         # ... and this many at every `eval_episodes_every`-th episode and after the last
    eval_episodes_every: int = 50
    planner: str = "icem"           # as good as cem's cpu preset with 3.3x fewer sequences (docs/throughput)
    planner_preset: str = "cpu"     # icem cpu: 180 candidates decaying over 3 iterations; cem cpu: 300 x 5
    horizon: Optional[int] = None   # overrides the preset's
    refine_steps: int = 3           # semi_amortized: K at training time; per_sequence: warm-started steps per update
    refine_lr: float = 0.03         # 0.1 made semi_amortized training degrade after ~300 updates (docs/agent)
    refine_every: int = REFINE_EVERY  # semi_amortized, iterative_amortized: refine (or run the learned update) on
    #                                 every k-th model update, amortized ones between (semi_amortized at 5: 1.32x
    #                                 amortized's seconds per episode against 2.39x at 1, final return 782 +- 21
    #                                 against 787 +- 13 over 3 seeds, docs/throughput; iterative_amortized at 1
    #                                 collapsed again and again, docs/agent/iterative_refine_every)
    decision_refine_steps: Optional[int] = None  # refinement at each decision; None: the posterior's default
    decision_refine_lr: Optional[float] = None   # its step size; None: the posterior's default, else refine_lr
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
        for name, valid in CHOICES.items():
            if getattr(self, name) not in valid():
                _fail(f"unknown {flag(name)} {getattr(self, name)!r}; valid choices: {', '.join(valid())}")
        if self.physics_state not in (0, 1) or isinstance(self.physics_state, float):
            _fail(f"{flag('physics_state')} must be 0 or 1; got {self.physics_state!r}")
        self.physics_state = bool(self.physics_state)
        if self.planner_preset not in presets(self.planner):
            _fail(f"{flag('planner')} {self.planner} has no preset {self.planner_preset!r}; its presets: "
                  f"{', '.join(presets(self.planner))}")
        check_ranges(vars(self), RANGES, flag)
        check_variant_settings(self.action_repeat, self.missing_every, self.missing_prob, self.obs_noise,
                               self.action_noise, label=flag)

    def eval_episodes_after(self, episode: int) -> int:
        """How many evaluation episodes follow collected episode `episode` (1-based, as in metrics.jsonl), once
        training has begun: `eval_episodes` at every `eval_episodes_every`-th episode and after the last, one at every
        other `eval_every`-th, none otherwise."""
        if episode == self.episodes or episode > self.seed_episodes and episode % self.eval_episodes_every == 0:
            return self.eval_episodes
        return int(episode > self.seed_episodes and episode % self.eval_every == 0)

    def unused_settings(self) -> set[str]:
        """Settings that change nothing for this config's posterior (runs that differ only in them are the same)."""
        return set() if self.inference in ("semi_amortized", "iterative_amortized") else {"refine_every"}

    def warnings(self) -> list[str]:
        """Settings that are valid but probably not what the user wants."""
        out = []
        if self.episodes <= self.seed_episodes:
            out.append(f"{flag('episodes')} {self.episodes} <= {flag('seed_episodes')} {self.seed_episodes}: the "
                       f"model is updated only after the seed episodes, so this run trains nothing and evaluates an "
                       f"untrained model (give more {flag('episodes')} or fewer {flag('seed_episodes')})")
        if self.refine_every not in (1, REFINE_EVERY) and "refine_every" in self.unused_settings():
            out.append(f"{flag('refine_every')} {self.refine_every} does nothing with {flag('inference')} "
                       f"{self.inference} (only semi_amortized and iterative_amortized refine on a fraction of their "
                       f"updates)")
        return out

    def save(self, path: Path) -> None:
        write_atomic(path, lambda f: f.write(json.dumps(asdict(self), indent=2).encode()))

    @classmethod
    def load(cls, path: Path) -> "AgentConfig":
        try:
            data = json.loads(Path(path).read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read run config {path}: {type(e).__name__}: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"run config {path} is not a JSON object of settings (it holds a "
                             f"{type(data).__name__})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"run config {path} has unknown settings: {', '.join(unknown)}")
        return cls(**{**{k: v for k, v in BEFORE_SETTING.items() if k not in data}, **data})


# What a run did about a setting before the setting existed (its config.json lacks it): load() fills in these, not
# today's defaults. obs_std: the observation std was fixed at 1 (PlaNet's); physics_state: no physical states were
# stored; eval_episodes(_every): one evaluation episode at each evaluation (every eval_every episodes and after the
# last, none at other multiples of 50); refine_every: refinement on every update.
BEFORE_SETTING = {"obs_std": 1.0, "physics_state": False, "eval_episodes": 1, "eval_episodes_every": MAX_EPISODES,
                  "refine_every": 1}

# Named sets of settings that differ from the current defaults; a setting a profile does not name keeps its default,
# and settings given explicitly override the profile's. "v1": the defaults before the throughput work (issue 16),
# kept so that benchmarks and studies can run the old and the new defaults side by side. "fast": half the model
# updates and iCEM's half-size preset, 3.07x v1's amortized episodes per core-hour (1.72x the defaults'), at a cost
# in return: amortized agents ended at 728 +- 26 after 100 episodes against the defaults' 821 +- 17 and v1's
# 756 +- 13, and learned more slowly (593 against 701 and 746 at episode 50; 3 seeds each, docs/throughput).
PROFILES = {"default": {},
            "v1": {"planner": "cem", "planner_preset": "cpu", "train_steps": 100, "eval_episodes": 1,
                   "eval_episodes_every": MAX_EPISODES, "refine_every": 1},
            "fast": {"train_steps": 50, "planner_preset": "small"}}


def profile_config(profile: str = "default", **settings) -> AgentConfig:
    """AgentConfig with `profile`'s settings as defaults, overridden by `settings`."""
    if profile not in PROFILES:
        _fail(f"unknown {flag('profile')} {profile!r}; valid choices: {', '.join(PROFILES)}")
    return AgentConfig(**{**PROFILES[profile], **settings})


def flag(name: str) -> str:
    """The command-line flag of setting `name` (what the user typed, so what error messages name)."""
    return "--" + name.replace("_", "-")


CHOICES = {"env": valid_env_names, "obs": lambda: OBS_TYPES, "inference": lambda: POSTERIORS,
           "planner": lambda: PLANNERS, "planner_preset": lambda: PLANNER_PRESETS, "device": lambda: DEVICES,
           "wandb": lambda: WANDB_MODES}

# The valid values of every numeric setting (the task-variant ones are envs.registry.VARIANT_RANGES).
# Upper bounds where there is no natural one are far beyond any sensible run, so that a typo is refused
# before it allocates or runs for ever.
RANGES = {
    "seed": Range(int, 0, MAX_SEED),
    "episodes": Range(int, 1, MAX_EPISODES),
    "seed_episodes": Range(int, 1, MAX_EPISODES),     # the model needs data before its first update
    "train_steps": Range(int, 1, 100_000),
    "batch_size": Range(int, 1, 4096),
    "seq_len": Range(int, 1, 10_000),
    "deter": Range(int, 1, 4096), "stoch": Range(int, 1, 4096), "hidden": Range(int, 1, 4096),
    "free_nats": Range(float, 0, 1000),
    "obs_std": Range(float, 0, 1000),                 # 0: learned
    "lr": Range(float, 0, 1, low_open=True),
    "adam_eps": Range(float, 0, 1, low_open=True),
    "grad_clip": Range(float, 0, low_open=True),
    "explore_noise": Range(float, 0, 100),
    "eval_every": Range(int, 1, MAX_EPISODES),
    "eval_episodes": Range(int, 1, MAX_EVAL_EPISODES),
    "eval_episodes_every": Range(int, 1, MAX_EPISODES),
    "horizon": Range(int, 1, 1000, optional=True),    # None: the planner preset's
    "refine_steps": Range(int, 0, 10_000),
    "refine_lr": Range(float, 0, 100, low_open=True),
    "refine_every": Range(int, 1, 100_000),
    "decision_refine_steps": Range(int, 0, 10_000, optional=True),   # None: the posterior's default
    "decision_refine_lr": Range(float, 0, 100, low_open=True, optional=True),
    "decision_window": Range(int, 1, 10_000),
}


def _fail(message: str):
    raise ValueError(message)
