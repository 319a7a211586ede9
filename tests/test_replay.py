"""Replay: episode alignment, atomic storage and reload, window sampling."""
import os

import numpy as np
import pytest
import torch

from agent.replay import REQUIRED, EpisodeBuilder, Replay, bytes_per_million_env_steps, bytes_per_step, training_replay


def state_episode(episode: int, length: int, action_dim: int = 2) -> dict:
    """Stored arrays of `length` steps whose entries encode (episode, step), for checking windows."""
    t = np.arange(length, dtype=np.float32)
    obs = np.stack([np.full(length, episode, np.float32), t, -t], axis=1)
    action = np.repeat((t - 1)[:, None], action_dim, axis=1)
    action[0] = 0
    reward = 10 * t
    return {"obs": obs, "action": action, "reward": reward, "obs_valid": t % 3 != 2}


def pixel_episode(length: int, rng: np.random.Generator) -> dict:
    return {"obs": rng.integers(0, 256, (length, 3, 64, 64), dtype=np.uint8),
            "action": rng.standard_normal((length, 1), dtype=np.float32),
            "reward": rng.standard_normal(length, dtype=np.float32), "obs_valid": np.ones(length, bool)}


def test_builder_aligns_actions_and_rewards_with_the_observation_they_lead_to():
    builder = EpisodeBuilder()
    o = [np.full(3, i, np.float64) for i in range(3)]
    builder.start(o[0], {"obs_valid": True, "physics_state": np.zeros(2)})
    builder.add(np.array([0.5, -0.5]), 1.0, o[1], {"obs_valid": False, "physics_state": np.ones(2)})
    builder.add(np.array([0.25, 0.75]), 2.0, o[2], {"physics_state": 2 * np.ones(2)})
    assert len(builder) == 2
    ep = builder.finish()
    assert set(ep) == {"obs", "action", "reward", "obs_valid", "physics_state"}
    np.testing.assert_array_equal(ep["obs"], np.stack(o))
    np.testing.assert_array_equal(ep["action"], [[0, 0], [0.5, -0.5], [0.25, 0.75]])
    np.testing.assert_array_equal(ep["reward"], [0, 1, 2])
    np.testing.assert_array_equal(ep["obs_valid"], [True, False, True])
    np.testing.assert_array_equal(ep["physics_state"][:, 0], [0, 1, 2])
    assert (ep["obs"].dtype, ep["action"].dtype, ep["reward"].dtype, ep["obs_valid"].dtype) == (
        np.float32, np.float32, np.float32, np.bool_)
    assert len(builder) == 0

    builder.start(np.zeros((3, 64, 64), np.uint8))
    builder.add(np.zeros(1), 0.0, np.ones((3, 64, 64), np.uint8), {})
    ep = builder.finish()
    assert ep["obs"].dtype == np.uint8 and "physics_state" not in ep


def test_builder_can_leave_the_physical_state_out():
    """--physics-state 0: a pixel step is its image, action, reward and flag (12,297 B for one action)."""
    builder = EpisodeBuilder(keep_physics_state=False)
    builder.start(np.zeros((3, 64, 64), np.uint8), {"physics_state": np.zeros(4)})
    builder.add(np.zeros(1), 0.0, np.ones((3, 64, 64), np.uint8), {"physics_state": np.ones(4)})
    ep = builder.finish()
    assert set(ep) == {"obs", "action", "reward", "obs_valid"}
    assert sum(a.nbytes for a in ep.values()) / 2 == 12288 + 4 + 4 + 1


def test_training_replay_keeps_the_physical_state_on_disk_only(tmp_path):
    """The agent's replay holds in memory what training samples (12,297 B per pixel step with one action),
    also after a resume; the files, and a read-only replay of them (the analysis), have the physical state."""
    rng = np.random.default_rng(0)
    episode = {**pixel_episode(5, rng), "physics_state": rng.standard_normal((5, 4), dtype=np.float32)}
    replay = training_replay(tmp_path, "pixels")
    replay.add_episode(episode)
    for kept in (replay, training_replay(tmp_path, "pixels")):             # as run, and resumed
        assert set(kept.episodes[0]) == set(REQUIRED)
        assert kept.nbytes / 5 == 12288 + 4 + 4 + 1
        np.testing.assert_array_equal(kept.episodes[0]["obs"], episode["obs"])
    analysis = Replay(tmp_path, read_only=True)
    np.testing.assert_array_equal(analysis.episodes[0]["physics_state"], episode["physics_state"])
    with pytest.raises(ValueError, match="in_memory must include the arrays sampling needs"):
        Replay(tmp_path, in_memory=("obs", "action"))


def test_builder_errors():
    builder = EpisodeBuilder()
    with pytest.raises(RuntimeError, match="start"):
        builder.add(np.zeros(1), 0.0, np.zeros(3))
    builder.start(np.zeros(3))
    with pytest.raises(ValueError, match="at least one"):
        builder.finish()
    with pytest.raises(ValueError, match="physics_state"):
        builder.add(np.zeros(1), 0.0, np.zeros(3), {"physics_state": np.zeros(2)})


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_to_disk(tmp_path, compress):
    rng = np.random.default_rng(0)
    replay = Replay(tmp_path, compress=compress)
    episodes = [pixel_episode(n, rng) for n in (4, 7, 5)]
    episodes[1]["physics_state"] = rng.standard_normal((7, 4), dtype=np.float32)
    paths = [replay.add_episode(ep) for ep in episodes]
    assert [os.path.basename(p) for p in paths] == ["episode_000000.npz", "episode_000001.npz", "episode_000002.npz"]
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(p) for p in paths]
    assert (replay.num_episodes, replay.num_steps, replay.num_transitions) == (3, 16, 13)
    assert replay.disk_bytes == sum(os.path.getsize(p) for p in paths)
    assert replay.nbytes == sum(a.nbytes for ep in episodes for a in ep.values())

    reloaded = Replay(tmp_path)
    assert (len(reloaded), reloaded.num_steps, reloaded.disk_bytes) == (3, 16, replay.disk_bytes)
    for original, loaded in zip(episodes, reloaded.episodes):
        assert set(loaded) == set(original)
        for key in original:
            assert loaded[key].dtype == original[key].dtype
            np.testing.assert_array_equal(loaded[key], original[key])
    assert os.path.basename(reloaded.add_episode(episodes[0])) == "episode_000003.npz"


def test_stored_episode_is_a_read_only_copy(tmp_path):
    replay = Replay(tmp_path)
    ep = state_episode(0, 5)
    replay.add_episode(ep)
    ep["obs"][:] = 99
    assert replay.episodes[0]["obs"][0, 0] == 0
    with pytest.raises(ValueError):
        replay.episodes[0]["obs"][0, 0] = 1


def test_leftover_temp_file_is_removed_and_corrupt_file_named(tmp_path):
    replay = Replay(tmp_path)
    path = replay.add_episode(state_episode(0, 6))
    leftover = tmp_path / ".episode-abc123.tmp"
    leftover.write_bytes(b"half an episode")
    reloaded = Replay(tmp_path)
    assert len(reloaded) == 1 and not leftover.exists()

    data = open(path, "rb").read()
    (tmp_path / "episode_000001.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="corrupt episode file .*episode_000001.npz"):
        Replay(tmp_path)


def test_add_episode_rejects_bad_episodes(tmp_path):
    replay = Replay(tmp_path)
    ep = state_episode(0, 5)
    with pytest.raises(ValueError, match="lacks arrays"):
        replay.add_episode({k: v for k, v in ep.items() if k != "reward"})
    with pytest.raises(ValueError, match="same length"):
        replay.add_episode({**ep, "reward": ep["reward"][:-1]})
    replay.add_episode(ep)
    with pytest.raises(ValueError, match="'obs' has per-step shape"):
        replay.add_episode({**ep, "obs": ep["obs"][:, :2]})
    assert os.listdir(tmp_path) == ["episode_000000.npz"]


def test_sample_windows(tmp_path):
    replay = Replay(tmp_path)
    lengths = [3, 8, 12, 6]
    for i, n in enumerate(lengths):
        replay.add_episode(state_episode(i, n))
    batch, start = replay.sample(64, 5, np.random.default_rng(1))
    assert batch.obs.shape == (64, 5, 3) and batch.actions.shape == (64, 5, 2)
    assert batch.mask.shape == batch.rewards.shape == (64, 5)
    assert (batch.obs.dtype, batch.actions.dtype, batch.rewards.dtype, batch.mask.dtype) == (
        torch.float32, torch.float32, torch.float32, torch.bool)
    assert batch.index.dtype == start.dtype == torch.int64 and start.shape == (64,)
    steps = start[:, None] + torch.arange(5)
    assert torch.equal(batch.obs[..., 0], batch.index[:, None].float().expand(-1, 5))
    assert torch.equal(batch.obs[..., 1], steps.float())
    assert torch.equal(batch.actions[..., 0], torch.where(steps > 0, steps - 1, 0).float())
    assert torch.equal(batch.rewards, 10 * steps.float())
    assert torch.equal(batch.mask, steps % 3 != 2)
    assert (batch.index != 0).all()  # 3 steps: too short for a window of 5
    assert (start + 5 <= torch.tensor(lengths)[batch.index]).all()
    for b in range(64):  # the window really is that slice of that episode
        ep = replay.episodes[int(batch.index[b])]
        np.testing.assert_array_equal(batch.obs[b].numpy(), ep["obs"][int(start[b]):int(start[b]) + 5])


def test_sample_pixels_scaled(tmp_path):
    replay = Replay(tmp_path)
    ep = pixel_episode(6, np.random.default_rng(2))
    ep["obs"][0, 0, 0, :2] = [0, 255]
    replay.add_episode(ep)
    batch, start = replay.sample(8, 6, np.random.default_rng(3))
    assert batch.obs.dtype == torch.float32 and batch.obs.shape == (8, 6, 3, 64, 64)
    assert (start == 0).all()
    expected = torch.from_numpy(ep["obs"]).float() / 255 - 0.5
    torch.testing.assert_close(batch.obs[0], expected)
    assert batch.obs[0, 0, 0, 0, :2].tolist() == [-0.5, 0.5]


def test_windows_drawn_uniformly(tmp_path):
    replay = Replay(tmp_path)
    lengths = [5, 10, 20, 4]
    for i, n in enumerate(lengths):
        replay.add_episode(state_episode(i, n))
    n, L = 20000, 5
    batch, start = replay.sample(n, L, np.random.default_rng(4))
    windows = np.array([1, 6, 16, 0])
    p = windows / windows.sum()
    freq = np.bincount(batch.index.numpy(), minlength=4) / n
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n))
    starts = np.bincount(start[batch.index == 2].numpy(), minlength=16)
    assert len(starts) == 16
    expected = starts.sum() / 16
    chi2 = ((starts - expected) ** 2 / expected).sum()
    assert chi2 < 45  # 15 degrees of freedom; P(chi2 > 45) < 1e-4


def test_sample_reproducible_and_errors(tmp_path):
    replay = Replay(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        replay.sample(2, 3, np.random.default_rng(0))
    for i, n in enumerate([6, 9]):
        replay.add_episode(state_episode(i, n))
    a, sa = replay.sample(16, 4, np.random.default_rng(7))
    b, sb = replay.sample(16, 4, np.random.default_rng(7))
    c, sc = replay.sample(16, 4, np.random.default_rng(8))
    assert torch.equal(a.obs, b.obs) and torch.equal(a.index, b.index) and torch.equal(sa, sb)
    assert not (torch.equal(a.index, c.index) and torch.equal(sa, sc))
    assert replay.sample(4, 9, np.random.default_rng(0))[1].eq(0).all()
    with pytest.raises(ValueError, match="longest has 9"):
        replay.sample(4, 10, np.random.default_rng(0))


def test_memory_figures():
    assert bytes_per_step((5,)) == 5 * 4 + 4 + 4 + 1
    assert bytes_per_step((3, 64, 64), np.uint8, action_dim=6, physics_dim=4) == 12288 + 24 + 4 + 1 + 16
    assert bytes_per_million_env_steps((5,), 8) == 29 * 125_000
    assert bytes_per_million_env_steps((3, 64, 64), 1, np.uint8) == 12297 * 1e6


def test_memory_estimate_matches_a_real_replay(tmp_path):
    replay = Replay(tmp_path)
    replay.add_episode(pixel_episode(10, np.random.default_rng(5)))
    assert replay.nbytes == 10 * bytes_per_step((3, 64, 64), np.uint8)
