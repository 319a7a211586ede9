"""dm_control suite tasks (MUJOCO_GL defaults to egl in envs/__init__.py)."""
from __future__ import annotations

import numpy as np
from dm_control import suite

from envs.base import PIXEL_SIZE, ControlEnv

CAMERA_ID = 0  # right for every task in registry.DMC_TASKS; quadruped would need camera 2


class DMCEnv(ControlEnv):
    """A dm_control suite task; state obs are the observation dict flattened in sorted key order."""

    def __init__(self, domain: str, task: str, pixels: bool, action_repeat: int, seed: int):
        self._env = suite.load(domain, task, task_kwargs={"random": seed})
        self.obs_keys = sorted(self._env.observation_spec())
        obs_dim = sum(int(np.prod(self._env.observation_spec()[k].shape)) for k in self.obs_keys)
        spec = self._env.action_spec()
        super().__init__((obs_dim,), pixels, spec.minimum, spec.maximum, action_repeat, seed)
        self._time_step = None

    def _reset(self, seed):
        if seed is not None:
            self._env.task.random.seed(seed)
        self._time_step = self._env.reset()

    def _advance(self, env_action):
        self._time_step = self._env.step(env_action)
        if not self._time_step.last():
            return self._time_step.reward, False, False
        terminated = self._time_step.discount == 0
        return self._time_step.reward, terminated, not terminated

    def _observe(self):
        if self.pixels:
            image = self._env.physics.render(PIXEL_SIZE, PIXEL_SIZE, camera_id=CAMERA_ID)
            return np.ascontiguousarray(image.transpose(2, 0, 1))
        obs = self._time_step.observation
        return np.concatenate([np.ravel(obs[k]) for k in self.obs_keys]).astype(np.float32)

    def _physics_state(self):
        return self._env.physics.get_state()

    def close(self):
        self._env.close()
