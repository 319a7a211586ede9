"""Gymnasium's continuous-control tasks behind the same interface as the dm_control ones."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.error import DependencyNotInstalled
from PIL import Image

from envs.base import PIXEL_SIZE, ControlEnv


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


class GymEnv(ControlEnv):
    """gymnasium.make(env_id) with its action box rescaled to [-1, 1]; pixels are render() resized with PIL.

    The physics state is qpos then qvel for MuJoCo tasks and `unwrapped.state` for classic control.
    """

    def __init__(self, env_id: str, pixels: bool, action_repeat: int, seed: int):
        kwargs = {"render_mode": "rgb_array"} if pixels else {}
        if pixels and "mujoco" in str(gym.spec(env_id).entry_point):
            kwargs.update(width=PIXEL_SIZE, height=PIXEL_SIZE)  # render small rather than resize 480x480
        try:
            self._env = gym.make(env_id, **kwargs)
        except (ImportError, DependencyNotInstalled) as err:
            raise ImportError(f"{env_id} needs gymnasium extras that are not installed: {_one_line(err)}") from err
        space = self._env.action_space
        obs_dim = int(np.prod(self._env.observation_space.shape))
        super().__init__((obs_dim,), pixels, space.low, space.high, action_repeat, seed)
        self._next_seed, self._obs = seed, None
        if pixels:
            self._check_render(env_id, seed)

    def _check_render(self, env_id: str, seed: int):
        try:
            self._env.reset(seed=seed)
            self._env.render()
        except (ImportError, DependencyNotInstalled) as err:
            self._env.close()
            raise ValueError(f"{env_id} cannot render pixels here ({_one_line(err)}); valid obs for it: state") from err

    def _reset(self, seed):
        seed = self._next_seed if seed is None else seed
        self._next_seed = None
        self._obs, _ = self._env.reset(seed=seed)

    def _advance(self, env_action):
        self._obs, reward, terminated, truncated, _ = self._env.step(env_action.astype(self._env.action_space.dtype))
        return float(reward), terminated, truncated

    def _observe(self):
        if not self.pixels:
            return np.asarray(self._obs, dtype=np.float32).ravel()
        image = self._env.render()
        if image.shape[:2] != (PIXEL_SIZE, PIXEL_SIZE):
            image = np.asarray(Image.fromarray(image).resize((PIXEL_SIZE, PIXEL_SIZE), Image.BILINEAR))
        return np.ascontiguousarray(image.transpose(2, 0, 1))

    def _physics_state(self):
        env = self._env.unwrapped
        if hasattr(env, "state_vector"):
            return env.state_vector()
        return getattr(env, "state", None)

    def close(self):
        self._env.close()
