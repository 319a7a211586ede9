"""Environments: toy tasks with known models, and dm_control / gymnasium control tasks (see registry.make_env)."""
import os

# Headless rendering; must precede any dm_control / gymnasium MuJoCo rendering import. A user's setting wins.
os.environ.setdefault("MUJOCO_GL", "egl")

from envs.registry import DMC_TASKS, GYM_TASKS, make_env, valid_env_names  # noqa: E402
from envs.wrappers import injected_noise  # noqa: E402

__all__ = ["DMC_TASKS", "GYM_TASKS", "make_env", "valid_env_names", "injected_noise"]
