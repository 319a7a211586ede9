"""Uncertainty-sensitive variants (Becker & Neumann 2022): missing observations, observation and action noise.

Each wrapper keeps its true setting in an attribute (`missing_every`, `missing_prob`, `obs_noise_std`,
`action_noise_std`); `injected_noise(env)` collects them so learned noise can be compared with injected noise.
Each draws from its own generator, seeded from the env seed and reseeded by `reset(seed=...)`.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

NO_NOISE = {"missing_every": 1, "missing_prob": 0.0, "obs_noise_std": 0.0, "action_noise_std": 0.0}


class _SeededWrapper(gym.Wrapper):
    stream = 0  # keeps the wrappers' random streams apart for the same seed

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self.rng = np.random.default_rng([seed, self.stream])

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng([seed, self.stream])
        return self.env.reset(seed=seed, options=options)


class MissingObservations(_SeededWrapper):
    """Keep only every `every`-th observation and/or drop each with probability `prob`.

    A missing observation is returned as zeros with `info["obs_valid"] = False`; the reset observation is kept.
    """

    stream = 1

    def __init__(self, env: gym.Env, seed: int, every: int = 1, prob: float = 0.0):
        super().__init__(env, seed)
        self.missing_every, self.missing_prob = every, prob
        self._t = 0

    def reset(self, *, seed=None, options=None):
        self._t = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        dropped = self.rng.random() < self.missing_prob
        if dropped or self._t % self.missing_every:
            obs, info = np.zeros_like(obs), {**info, "obs_valid": False}
        return obs, reward, terminated, truncated, info


class ObservationNoise(_SeededWrapper):
    """Add Gaussian noise with std `std`; pixel noise is in [0, 255] units, rounded and clipped."""

    stream = 2

    def __init__(self, env: gym.Env, seed: int, std: float):
        super().__init__(env, seed)
        self.obs_noise_std = std

    def _noisy(self, obs):
        noisy = obs + self.rng.normal(0.0, self.obs_noise_std, obs.shape)
        if obs.dtype == np.uint8:
            return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        return noisy.astype(obs.dtype)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return self._noisy(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._noisy(obs), reward, terminated, truncated, info


class ActionNoise(_SeededWrapper):
    """Add Gaussian noise with std `std` to each action, clipped to the action bounds.

    The action that reaches the env is reported as `info["applied_action"]`.
    """

    stream = 3

    def __init__(self, env: gym.Env, seed: int, std: float):
        super().__init__(env, seed)
        self.action_noise_std = std

    def step(self, action):
        space = self.action_space
        noisy = np.asarray(action, dtype=np.float64) + self.rng.normal(0.0, self.action_noise_std, space.shape)
        applied = np.clip(noisy, space.low, space.high).astype(space.dtype)
        obs, reward, terminated, truncated, info = self.env.step(applied)
        return obs, reward, terminated, truncated, {**info, "applied_action": applied}


def injected_noise(env: gym.Env) -> dict:
    """The true settings of all wrappers around `env` (defaults where a wrapper is absent)."""
    settings = dict(NO_NOISE)
    while isinstance(env, gym.Wrapper):
        settings.update({k: v for k, v in vars(env).items() if k in NO_NOISE})
        env = env.env
    return settings
