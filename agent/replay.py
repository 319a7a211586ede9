"""Episode replay of the agent: episodes on disk (one .npz each) and in memory, and window sampling.

An episode with observations o_0..o_T, actions a_0..a_{T-1} and rewards r_1..r_T is stored as
arrays of length T + 1 aligned like `SequenceBatch`: `obs[t] = o_t`, `action[t] = a_{t-1}`
(action[0] = 0, "no action yet"), `reward[t] = r_t` (reward[0] = 0), `obs_valid[t]`, and
optionally `physics_state[t]` or any other per-step array.
"""
from __future__ import annotations

import os
import re
import zipfile
import zlib
from typing import Optional, Sequence

import numpy as np
import torch

from world_models.base import SequenceBatch

from .checkpoint import write_atomic

REQUIRED = ("obs", "action", "reward", "obs_valid")
_EPISODE_FILE = re.compile(r"episode_(\d+)\.npz")
_TEMP_PREFIX, _TEMP_SUFFIX = ".episode-", ".tmp"


def _obs_array(obs) -> np.ndarray:
    """Pixels stay uint8; anything else becomes float32."""
    obs = np.asarray(obs)
    return obs.copy() if obs.dtype == np.uint8 else obs.astype(np.float32)


class EpisodeBuilder:
    """Collects one episode step by step: `start(obs, info)`, `add(action, reward, obs, info)`, ..., `finish()`.
    keep_physics_state=False leaves out info['physics_state'] (the true state, for the calibration read-out;
    16 B per step on cartpole, the only part of a pixel step beyond 12,297 B)."""

    def __init__(self, keep_physics_state: bool = True):
        self._steps = None
        self.keep_physics_state = keep_physics_state

    def _state(self, info: dict):
        return info.get("physics_state") if self.keep_physics_state else None

    def start(self, obs, info: dict | None = None) -> None:
        """Begin an episode at the reset observation o_0 (any unfinished episode is discarded)."""
        info = info or {}
        state = self._state(info)
        self._steps = {"obs": [_obs_array(obs)], "action": [], "reward": [0.0],
                       "obs_valid": [bool(info.get("obs_valid", True))]}
        if state is not None:
            self._steps["physics_state"] = [np.asarray(state, dtype=np.float32)]

    def add(self, action, reward: float, obs, info: dict | None = None) -> None:
        """Record a_{t-1}, then r_t and o_t received after it."""
        if self._steps is None:
            raise RuntimeError("add() before start(): call start(obs, info) with the reset observation first")
        info = info or {}
        state = self._state(info)
        if (state is None) == ("physics_state" in self._steps):
            raise ValueError("info['physics_state'] must be reported at every step of an episode or at none")
        self._steps["action"].append(np.asarray(action, dtype=np.float32))
        self._steps["reward"].append(float(reward))
        self._steps["obs"].append(_obs_array(obs))
        self._steps["obs_valid"].append(bool(info.get("obs_valid", True)))
        if state is not None:
            self._steps["physics_state"].append(np.asarray(state, dtype=np.float32))

    def __len__(self) -> int:
        """Actions recorded so far (T)."""
        return 0 if self._steps is None else len(self._steps["action"])

    def finish(self) -> dict[str, np.ndarray]:
        """The episode's arrays (length T + 1); the builder is then empty."""
        if not len(self):
            raise ValueError("an episode needs at least one add() after start()")
        steps, self._steps = self._steps, None
        actions = np.stack(steps.pop("action"))
        episode = {key: np.stack(values) for key, values in steps.items()}
        episode["action"] = np.concatenate([np.zeros_like(actions[:1]), actions])
        episode["reward"] = episode["reward"].astype(np.float32)
        return episode


class Replay:
    """Episodes stored in `directory` as episode_000000.npz, episode_000001.npz, ... and kept in memory.

    Construction loads every complete episode file there (so a resumed run gets its replay back) and
    removes temp files left by an interrupted write. Episode i (in file order) has `index` i in sampled
    batches. One writer per directory. `read_only` (for analysis of a run that may still be writing)
    leaves temp files alone and refuses add_episode. `compress` uses np.savez_compressed (smaller files, slower writes; loading is unaffected).
    `in_memory` names the arrays kept in memory (None: all); the others are written and checked but stay in
    the files (see training_replay).
    """

    def __init__(self, directory, compress: bool = False, read_only: bool = False,
                 in_memory: Optional[Sequence[str]] = None):
        if in_memory is not None and not set(REQUIRED) <= set(in_memory):
            raise ValueError(f"in_memory must include the arrays sampling needs {REQUIRED}, got {tuple(in_memory)}")
        self.directory, self.compress, self.read_only = os.fspath(directory), compress, read_only
        self.in_memory = None if in_memory is None else frozenset(in_memory)
        if read_only and not os.path.isdir(self.directory):
            raise ValueError(f"no replay directory {self.directory}")
        os.makedirs(self.directory, exist_ok=True)
        self._episodes: list[dict[str, np.ndarray]] = []
        self._lengths: list[int] = []
        self._disk_bytes = 0
        numbered = []
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX):
                if not read_only:
                    os.remove(path)
            elif match := _EPISODE_FILE.fullmatch(name):
                numbered.append((int(match.group(1)), path))
        for _, path in sorted(numbered):
            episode = self._load(path)
            self._check(episode, path)
            self._keep(episode)
            self._disk_bytes += os.path.getsize(path)
        self._next_id = max((number for number, _ in numbered), default=-1) + 1

    @staticmethod
    def _load(path: str) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as f:
                return {key: f[key] for key in f.files}
        except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as e:
            raise RuntimeError(f"corrupt episode file {path} ({type(e).__name__}: {e}); "
                               f"move or delete it to resume without that episode") from e

    def _check(self, episode: dict[str, np.ndarray], where: str) -> None:
        """Raise if the episode lacks arrays, has ragged ones or does not match the stored episodes."""
        missing = [key for key in REQUIRED if key not in episode]
        if missing:
            raise ValueError(f"episode {where} lacks arrays {missing}; it has {sorted(episode)}")
        lengths = {key: len(value) for key, value in episode.items()}
        if len(set(lengths.values())) != 1 or lengths["obs"] < 1:
            raise ValueError(f"episode {where}: all arrays must have the same length >= 1, got {lengths}")
        if self._episodes:
            first = self._episodes[0]
            for key in REQUIRED:
                if (episode[key].shape[1:], episode[key].dtype) != (first[key].shape[1:], first[key].dtype):
                    raise ValueError(f"episode {where}: '{key}' has per-step shape {episode[key].shape[1:]} and "
                                     f"dtype {episode[key].dtype}, but stored episodes have "
                                     f"{first[key].shape[1:]} and {first[key].dtype}")

    def _keep(self, episode: dict[str, np.ndarray]) -> None:
        """Keep a checked episode's in_memory arrays, read-only, in memory."""
        if self.in_memory is not None:
            episode = {key: value for key, value in episode.items() if key in self.in_memory}
        for value in episode.values():
            value.flags.writeable = False
        self._episodes.append(episode)
        self._lengths.append(len(episode["obs"]))

    def add_episode(self, arrays: dict) -> str:
        """Write the episode atomically to the next episode file, keep it in memory; returns the file's path."""
        if self.read_only:
            raise ValueError(f"replay {self.directory} was opened read-only")
        episode = {key: np.array(value) for key, value in arrays.items()}
        path = os.path.join(self.directory, f"episode_{self._next_id:06d}.npz")
        self._check(episode, path)
        write_atomic(path, lambda f: (np.savez_compressed if self.compress else np.savez)(f, **episode),
                     prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        self._keep(episode)
        self._next_id += 1
        self._disk_bytes += os.path.getsize(path)
        return path

    @property
    def episodes(self) -> list[dict[str, np.ndarray]]:
        """The stored episodes in index order: their in_memory arrays (read-only)."""
        return list(self._episodes)

    def __len__(self) -> int:
        return len(self._episodes)

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_steps(self) -> int:
        """Stored steps: T + 1 per episode (the reset observation included)."""
        return sum(self._lengths)

    @property
    def num_transitions(self) -> int:
        """Transitions (o_{t-1}, a_{t-1}, r_t, o_t), i.e. agent steps taken: T per episode.
        Env steps are this times the action repeat."""
        return sum(self._lengths) - len(self._lengths)

    @property
    def disk_bytes(self) -> int:
        """Bytes of this replay's episode files."""
        return self._disk_bytes

    @property
    def nbytes(self) -> int:
        """Bytes of episode arrays held in memory."""
        return sum(value.nbytes for episode in self._episodes for value in episode.values())

    def sample(self, batch_size: int, length: int, generator: np.random.Generator
               ) -> tuple[SequenceBatch, torch.Tensor]:
        """B windows of `length` consecutive stored steps, uniform over all windows of all episodes (so an
        episode is chosen with probability proportional to its number of windows, then a uniform start).

        Returns (batch, start): batch.index holds episode indices and start (B,) int64 the offset of each
        window in its episode, so batch step t of sequence b is step start[b] + t of episode index[b].
        Pixel observations become float32 x / 255 - 0.5; state observations are unchanged.
        """
        if batch_size < 1 or length < 1:
            raise ValueError(f"batch_size and length must be >= 1, got {batch_size} and {length}")
        if not self._episodes:
            raise ValueError("cannot sample from an empty replay")
        windows = np.maximum(np.asarray(self._lengths) - length + 1, 0)
        if not windows.any():
            raise ValueError(f"no episode has {length} stored steps to sample a window from; the longest has "
                             f"{max(self._lengths)} (T + 1, the reset observation included)")
        ends = np.cumsum(windows)
        flat = generator.integers(ends[-1], size=batch_size)
        index = np.searchsorted(ends, flat, side="right")
        start = flat - (ends[index] - windows[index])
        pick = lambda key: np.stack([self._episodes[i][key][s:s + length] for i, s in zip(index, start)])
        obs = torch.from_numpy(pick("obs"))
        if obs.dtype == torch.uint8:
            obs = obs.float().div_(255.0).sub_(0.5)
        batch = SequenceBatch(obs, torch.from_numpy(pick("action")), torch.from_numpy(pick("obs_valid")),
                              torch.from_numpy(pick("reward")), torch.from_numpy(index.astype(np.int64)))
        return batch, torch.from_numpy(start.astype(np.int64))


def training_replay(directory, obs_type: str) -> Replay:
    """The replay as the agent keeps it.
    - Pixel episodes are compressed on disk: their raw files carry about 8 B per step of zip and npy headers
      beyond the arrays (12,305 B per cartpole step at 126 steps per file), and their frames compress well;
      state episodes are small either way.
    - In memory it keeps only the arrays that training samples (REQUIRED). The physical state, for the
      analysis's read-out, which opens the files itself (analysis.run_loading), so costs disk only (a cartpole
      pixel step in memory: 12,297 B with it or without)."""
    return Replay(directory, compress=obs_type == "pixels", in_memory=REQUIRED)


def bytes_per_step(obs_shape, obs_dtype=np.float32, action_dim: int = 1, physics_dim: int = 0) -> int:
    """Bytes of one stored step: obs, float32 action and reward, bool obs_valid, float32 physics_state."""
    return int(np.prod(obs_shape)) * np.dtype(obs_dtype).itemsize + 4 * action_dim + 4 + 1 + 4 * physics_dim


def bytes_per_million_env_steps(obs_shape, action_repeat: int, obs_dtype=np.float32, action_dim: int = 1,
                                physics_dim: int = 0) -> float:
    """Replay memory per 10^6 env steps: bytes_per_step x 1e6 / action_repeat (one stored step per agent
    step; the extra reset step per episode, 1 / (episode agent steps) more, is left out)."""
    return bytes_per_step(obs_shape, obs_dtype, action_dim, physics_dim) * 1e6 / action_repeat
