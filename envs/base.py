"""Shared stepping logic: actions in [-1, 1], action repeat, and the info every env reports."""
from __future__ import annotations

import gymnasium as gym
import numpy as np

PIXEL_SIZE = 64


class ControlEnv(gym.Env):
    """A continuous-control task behind the gymnasium API, with actions in [-1, 1] and action repeat.

    Subclasses implement `_reset(seed)`, `_advance(env_action) -> (reward, terminated, truncated)`,
    `_observe()` and `_physics_state()` (an array, or None where there is no ground-truth state).
    `info` holds `env_steps` (env steps in this call), `elapsed_env_steps` (in this episode),
    `obs_valid` (True here; see wrappers.MissingObservations) and `physics_state` where available.
    """

    def __init__(self, obs_shape, pixels: bool, action_low, action_high, action_repeat: int, seed: int):
        self.pixels, self.action_repeat = pixels, action_repeat
        self._low = np.asarray(action_low, dtype=np.float64)
        self._high = np.asarray(action_high, dtype=np.float64)
        if pixels:
            self.observation_space = gym.spaces.Box(0, 255, (3, PIXEL_SIZE, PIXEL_SIZE), np.uint8)
        else:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, obs_shape, np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, self._low.shape, np.float32, seed=seed)
        self._elapsed, self._episode_over = 0, True

    def reset(self, *, seed=None, options=None):
        self._reset(seed)
        self._elapsed, self._episode_over = 0, False
        return self._observe(), self._info(0)

    def step(self, action):
        if self._episode_over:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        unit = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        env_action = self._low + (unit + 1.0) * 0.5 * (self._high - self._low)
        reward, steps, terminated, truncated = 0.0, 0, False, False
        while steps < self.action_repeat and not (terminated or truncated):
            r, terminated, truncated = self._advance(env_action)
            reward += r
            steps += 1
        self._elapsed += steps
        self._episode_over = terminated or truncated
        return self._observe(), reward, terminated, truncated, self._info(steps)

    def _info(self, steps: int) -> dict:
        info = {"env_steps": steps, "elapsed_env_steps": self._elapsed, "obs_valid": True}
        state = self._physics_state()
        if state is not None:
            info["physics_state"] = np.asarray(state, dtype=np.float32).copy()
        return info
