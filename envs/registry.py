"""Env names, per-task defaults and `make_env`, which checks its arguments and stacks the wrappers."""
from __future__ import annotations

from typing import Callable

import gymnasium as gym

from envs.checks import Range, check_ranges
from envs.dmc import DMCEnv
from envs.gym_tasks import GymEnv
from envs.wrappers import ActionNoise, MissingObservations, ObservationNoise

DMC_TASKS = {
    "cartpole_swingup": ("cartpole", "swingup"),
    "cartpole_balance": ("cartpole", "balance"),
    "reacher_easy": ("reacher", "easy"),
    "cheetah_run": ("cheetah", "run"),
    "finger_spin": ("finger", "spin"),
    "cup_catch": ("ball_in_cup", "catch"),
    "walker_walk": ("walker", "walk"),
    "pendulum_swingup": ("pendulum", "swingup"),
}

# Short names by domain: the PlaNet task of that domain (the only one in DMC_TASKS where PlaNet has none).
DMC_ALIASES = {"cartpole": "cartpole_swingup", "reacher": "reacher_easy", "cheetah": "cheetah_run",
               "finger": "finger_spin", "cup": "cup_catch", "ball_in_cup": "cup_catch", "walker": "walker_walk",
               "pendulum": "pendulum_swingup"}

# Action repeat per dm_control domain, as in PlaNet (Hafner et al. 2019). PlaNet has no pendulum task:
# its 2 is our choice. Gymnasium tasks default to 1.
DMC_ACTION_REPEAT = {"cartpole": 8, "reacher": 4, "cheetah": 4, "finger": 2, "ball_in_cup": 4, "walker": 2,
                     "pendulum": 2}

GYM_TASKS = tuple(name for name in (
    "Pendulum-v1", "MountainCarContinuous-v0", "InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Reacher-v5",
    "Pusher-v5", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Swimmer-v5", "Ant-v5", "Humanoid-v5",
    "HumanoidStandup-v5") if name in gym.registry)

OBS_TYPES = ("state", "pixels")


def valid_env_names() -> list[str]:
    return [*DMC_ALIASES, *DMC_TASKS, *GYM_TASKS]


def dmc_task(name: str) -> tuple[str, str] | None:
    """(domain, task) of a dm_control name or alias; None for a gymnasium task."""
    return DMC_TASKS.get(DMC_ALIASES.get(name, name))


def describe_aliases() -> str:
    return ", ".join(f"{alias} = {task}" for alias, task in DMC_ALIASES.items())


def default_action_repeat(name: str) -> int:
    task = dmc_task(name)
    return DMC_ACTION_REPEAT[task[0]] if task else 1


def _check(ok: bool, message: str):
    if not ok:
        raise ValueError(message)


# The task-variant settings and their valid values (also checked by the agent's config, so that a sweep can
# reject them before launching anything).
VARIANT_RANGES = {
    "action_repeat": Range(int, 1, 1000, optional=True),        # None: the task's default
    "missing_every": Range(int, 1, 1000, optional=True),        # keep only every k-th observation
    "missing_prob": Range(float, 0, 1, high_open=True, optional=True),
    "obs_noise": Range(float, 0),
    "action_noise": Range(float, 0),
}


def check_variant_settings(action_repeat=None, missing_every=None, missing_prob=None, obs_noise=0.0,
                           action_noise=0.0, label: Callable[[str], str] = str) -> None:
    """Raise ValueError naming (as label(name)) the first bad setting of a task variant."""
    check_ranges(dict(action_repeat=action_repeat, missing_every=missing_every, missing_prob=missing_prob,
                      obs_noise=obs_noise, action_noise=action_noise), VARIANT_RANGES, label)


def make_env(name: str, obs: str = "state", action_repeat: int | None = None, seed: int = 0,
             missing_every: int | None = None, missing_prob: float | None = None,
             obs_noise: float = 0.0, action_noise: float = 0.0) -> gym.Env:
    """Build a task with actions in [-1, 1], optionally with missing observations, observation or action noise.

    `action_repeat=None` takes the per-task default. Raises ValueError on bad arguments.
    """
    _check(name in valid_env_names(), f"unknown env name {name!r}; valid names: {', '.join(valid_env_names())}")
    _check(obs in OBS_TYPES, f"obs must be one of {', '.join(OBS_TYPES)}; got {obs!r}")
    check_variant_settings(action_repeat, missing_every, missing_prob, obs_noise, action_noise)

    repeat = default_action_repeat(name) if action_repeat is None else int(action_repeat)
    pixels = obs == "pixels"
    task = dmc_task(name)
    if task:
        env = DMCEnv(*task, pixels=pixels, action_repeat=repeat, seed=seed)
    else:
        env = GymEnv(name, pixels=pixels, action_repeat=repeat, seed=seed)
    # Missing observations go outermost so that a dropped observation is exactly zeros, not noise.
    if action_noise > 0:
        env = ActionNoise(env, seed, action_noise)
    if obs_noise > 0:
        env = ObservationNoise(env, seed, obs_noise)
    if (missing_every or 1) > 1 or (missing_prob or 0) > 0:
        env = MissingObservations(env, seed, every=missing_every or 1, prob=missing_prob or 0.0)
    return env
