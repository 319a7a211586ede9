import importlib.util

import numpy as np
import pytest

from envs import DMC_TASKS, GYM_TASKS, injected_noise, make_env, valid_env_names
from envs.registry import DMC_ALIASES


@pytest.fixture
def make():
    """make_env that closes every env it built at the end of the test."""
    built = []

    def _make(*args, **kwargs):
        built.append(make_env(*args, **kwargs))
        return built[-1]

    yield _make
    for env in built:
        env.close()


def actions(env, n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *env.action_space.shape)).astype(np.float32)


def rollout(env, n, seed=0):
    obs, info = env.reset()
    observations, rewards, infos = [obs], [], [info]
    for a in actions(env, n, seed):
        obs, reward, _, _, info = env.step(a)
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
    return np.stack(observations), np.array(rewards), infos


def test_action_repeat_sums_rewards(make):
    repeated = make("cartpole_swingup", action_repeat=4, seed=3)
    single = make("cartpole_swingup", action_repeat=1, seed=3)
    np.testing.assert_array_equal(repeated.reset()[0], single.reset()[0])
    for a in actions(repeated, 10):
        obs, reward, _, _, info = repeated.step(a)
        steps = [single.step(a) for _ in range(4)]
        assert info["env_steps"] == 4
        assert reward == pytest.approx(sum(step[1] for step in steps), rel=1e-12, abs=1e-12)
        np.testing.assert_array_equal(obs, steps[-1][0])


def test_dmc_episode_is_1000_env_steps(make):
    for repeat, agent_steps, last_env_steps in [(None, 125, 8), (3, 334, 1)]:
        env = make("cartpole", action_repeat=repeat)
        env.reset()
        zero = np.zeros(env.action_space.shape)
        for t in range(agent_steps):
            _, _, terminated, truncated, info = env.step(zero)
            assert not terminated and truncated == (t == agent_steps - 1)
        assert info["env_steps"] == last_env_steps and info["elapsed_env_steps"] == 1000
        with pytest.raises(RuntimeError):
            env.step(zero)


def test_default_action_repeats(make):
    expected = {"cartpole": 8, "cartpole_balance": 8, "reacher_easy": 4, "cheetah_run": 4, "finger_spin": 2,
                "cup_catch": 4, "walker_walk": 2, "pendulum_swingup": 2, "Pendulum-v1": 1}
    assert {name: make(name).unwrapped.action_repeat for name in expected} == expected


@pytest.mark.parametrize("name,dim", [("cartpole_swingup", 5), ("reacher_easy", 6), ("cheetah_run", 17),
                                      ("finger_spin", 9), ("cup_catch", 8), ("walker_walk", 24),
                                      ("pendulum_swingup", 3)])
def test_dmc_state_obs_and_physics_state(make, name, dim):
    env = make(name)
    obs, info = env.reset()
    assert obs.shape == env.observation_space.shape == (dim,) and obs.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, -1)
    np.testing.assert_array_equal(env.action_space.high, 1)
    obs, _, _, _, info = env.step(env.action_space.sample())
    assert obs.shape == (dim,) and obs.dtype == np.float32 and np.all(np.isfinite(obs))
    state = env.unwrapped._env.physics.get_state()
    assert info["physics_state"].dtype == np.float32
    np.testing.assert_allclose(info["physics_state"], state, rtol=1e-6)


def test_pixel_obs(make):
    env = make("cartpole_swingup", obs="pixels")
    obs, _ = env.reset()
    assert env.observation_space.shape == obs.shape == (3, 64, 64) and obs.dtype == np.uint8
    assert obs.min() < obs.max()
    moved, *_ = env.step(np.ones(1))
    assert moved.shape == (3, 64, 64) and moved.dtype == np.uint8 and not np.array_equal(moved, obs)


def test_missing_every_kth(make):
    env = make("cartpole", missing_every=3)
    obs, info = env.reset()
    observations, infos = [obs], [info]
    for a in actions(env, 10):
        obs, _, _, _, info = env.step(a)
        observations.append(obs)
        infos.append(info)
    valid = [info["obs_valid"] for info in infos]
    assert valid == [t % 3 == 0 for t in range(11)]
    for obs, ok in zip(observations, valid):
        assert np.any(obs != 0) if ok else np.all(obs == 0)
    assert injected_noise(env)["missing_every"] == 3


def test_missing_at_random(make):
    env = make("cartpole", missing_prob=0.3)
    valid = []
    for _ in range(3):
        _, info = env.reset()
        assert info["obs_valid"]
        for a in actions(env, 125):
            obs, _, _, truncated, info = env.step(a)
            valid.append(info["obs_valid"])
            assert info["obs_valid"] or np.all(obs == 0)
        assert truncated
    assert 1 - np.mean(valid) == pytest.approx(0.3, abs=0.07)
    assert env.missing_prob == 0.3


def test_state_obs_noise_has_the_right_std(make):
    clean, noisy = make("cartpole", seed=1), make("cartpole", seed=1, obs_noise=0.1)
    diff = rollout(noisy, 60)[0] - rollout(clean, 60)[0]
    assert diff.dtype == np.float32
    assert abs(diff.mean()) < 0.02 and diff.std() == pytest.approx(0.1, rel=0.1)
    assert noisy.obs_noise_std == 0.1


def test_pixel_obs_noise(make):
    clean, noisy = make("cartpole", obs="pixels"), make("cartpole", obs="pixels", obs_noise=5.0)
    obs_clean, obs_noisy = clean.reset()[0], noisy.reset()[0]
    assert obs_noisy.dtype == np.uint8
    diff = obs_noisy.astype(float) - obs_clean
    inside = (obs_clean > 20) & (obs_clean < 235)  # away from the clipping at 0 and 255
    assert diff[inside].std() == pytest.approx(5.0, rel=0.1)


def test_action_noise_is_recorded_and_applied(make):
    env = make("cartpole", action_noise=0.2)
    env.reset()
    applied = np.array([env.step(np.zeros(1))[4]["applied_action"] for _ in range(100)])
    assert applied.std() == pytest.approx(0.2, rel=0.2)
    assert injected_noise(env) == {"missing_every": 1, "missing_prob": 0.0, "obs_noise_std": 0.0,
                                   "action_noise_std": 0.2}
    assert injected_noise(make("cartpole"))["action_noise_std"] == 0.0


def test_same_seed_same_rollout(make):
    kwargs = dict(seed=7, missing_prob=0.2, obs_noise=0.05, action_noise=0.1)
    first, second = rollout(make("walker_walk", **kwargs), 20), rollout(make("walker_walk", **kwargs), 20)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert [i["obs_valid"] for i in first[2]] == [i["obs_valid"] for i in second[2]]
    other = make("walker_walk", seed=8).reset()[0]
    assert not np.array_equal(first[0][0], other)
    env = make("walker_walk", **kwargs)
    again = env.reset(seed=11)[0], env.step(np.zeros(6))[0]
    np.testing.assert_array_equal(again, (env.reset(seed=11)[0], env.step(np.zeros(6))[0]))


def test_pendulum_v1_through_the_same_interface(make):
    env = make("Pendulum-v1", seed=2)
    obs, info = env.reset()
    assert obs.shape == env.observation_space.shape == (3,) and obs.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.high, 1)
    np.testing.assert_allclose(info["physics_state"], env.unwrapped._env.unwrapped.state, rtol=1e-6)
    env.step(np.ones(1))
    assert env.unwrapped._env.unwrapped.last_u == pytest.approx(2.0)  # +1 maps to Pendulum's max torque
    env.step(-np.ones(1))
    assert env.unwrapped._env.unwrapped.last_u == pytest.approx(-2.0)
    first, second = rollout(make("Pendulum-v1", seed=2), 10), rollout(make("Pendulum-v1", seed=2), 10)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_pendulum_v1_pixels_render_or_are_refused():
    if importlib.util.find_spec("pygame") is None:
        with pytest.raises(ValueError, match="valid obs for it: state"):
            make_env("Pendulum-v1", obs="pixels")
    else:
        env = make_env("Pendulum-v1", obs="pixels")
        obs, _ = env.reset()
        assert obs.shape == (3, 64, 64) and obs.dtype == np.uint8 and obs.min() < obs.max()
        env.close()


def test_gymnasium_mujoco_task(make):
    pytest.importorskip("imageio", reason="gymnasium MuJoCo tasks need gymnasium[mujoco]")
    env = make("HalfCheetah-v5", seed=0)
    _, info = env.reset()
    data = env.unwrapped._env.unwrapped.data
    np.testing.assert_allclose(info["physics_state"], np.concatenate([data.qpos, data.qvel]), rtol=1e-6)
    obs, _, _, _, info = env.step(np.ones(6))
    assert obs.shape == (17,) and info["env_steps"] == 1


@pytest.mark.parametrize("kwargs,choices", [
    (dict(name="cartpole_swingupp"), "cartpole_swingup"),
    (dict(name="pendulum-v1"), "Pendulum-v1"),
    (dict(name="cartpole", obs="rgb"), "state, pixels"),
    (dict(name="cartpole", action_repeat=0), "an integer in [1, 1000]"),
    (dict(name="cartpole", action_repeat=-2), "an integer in [1, 1000]"),
    (dict(name="cartpole", action_repeat=2.5), "an integer in [1, 1000]"),
    (dict(name="cartpole", missing_prob=1.0), "[0, 1)"),
    (dict(name="cartpole", missing_prob=-0.1), "[0, 1)"),
    (dict(name="cartpole", missing_every=0), "an integer in [1, 1000]"),
    (dict(name="cartpole", obs_noise=-0.1), ">= 0"),
    (dict(name="cartpole", action_noise=-1.0), ">= 0"),
])
def test_bad_input_raises_value_error_with_choices(kwargs, choices):
    with pytest.raises(ValueError) as err:
        make_env(**kwargs)
    message = str(err.value)
    assert choices in message and "\n" not in message


def test_valid_names():
    names = valid_env_names()
    assert set(DMC_TASKS) <= set(names) and set(GYM_TASKS) <= set(names)
    assert {"cartpole", "cartpole_swingup", "cheetah_run", "Pendulum-v1", "HalfCheetah-v5"} <= set(names)


def test_every_dm_control_domain_has_a_short_alias_for_its_planet_task():
    assert {name: DMC_TASKS[task] for name, task in DMC_ALIASES.items()} == {
        "cartpole": ("cartpole", "swingup"), "reacher": ("reacher", "easy"), "cheetah": ("cheetah", "run"),
        "finger": ("finger", "spin"), "cup": ("ball_in_cup", "catch"), "ball_in_cup": ("ball_in_cup", "catch"),
        "walker": ("walker", "walk"), "pendulum": ("pendulum", "swingup")}
    assert {domain for domain, _ in DMC_TASKS.values()} <= set(DMC_ALIASES)     # every domain has one
    env = make_env("cheetah")
    assert env.observation_space.shape == (17,) and env.unwrapped.action_repeat == 4
