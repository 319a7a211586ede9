"""Planners: CEM and random shooting on known objectives, and the imagined-return objective of a model."""
import pytest
import torch

from planners.cem import PRESETS, CEMPlanner, CEMSettings
from planners.factory import make_planner
from planners.objectives import imagined_return
from planners.random_shooting import RandomShootingPlanner, RandomShootingSettings
from planners.timing import time_decision
from world_models.base import ModelState
from world_models.nonlinear_ssm import NonlinearSSM
from world_models.rssm import RSSM


def quadratic(target: torch.Tensor):
    """J(a) = -sum_k ||a_k - a*_k||^2 for a target (H, A); records the shape of each call."""
    calls = []

    def objective(actions):
        calls.append(tuple(actions.shape))
        return -(actions - target).pow(2).sum((1, 2))

    return objective, calls


def small_rssm():
    return RSSM((3,), 1, deter_dim=8, z_dim=4, hidden=8)


def belief(model):
    g = torch.Generator().manual_seed(3)
    return ModelState(torch.randn(1, model.deter_dim, generator=g), torch.randn(1, model.z_dim, generator=g))


SMALL = {"cem": {"horizon": 3, "candidates": 40, "iterations": 3, "top_k": 4},
         "icem": {"horizon": 3, "candidates": 40, "iterations": 3, "top_k": 4},
         "random_shooting": {"horizon": 3, "candidates": 40}}


def test_cem_finds_interior_optimum():
    target = torch.tensor([[0.3, -0.5], [-0.2, 0.7], [0.6, 0.1]])
    objective, _ = quadratic(target)
    planner = make_planner("cem", horizon=3, candidates=200, iterations=8, top_k=20)
    action = planner.plan(objective, 2, torch.Generator().manual_seed(0))
    assert action.shape == (2,)
    assert torch.allclose(action, target[0], atol=0.03)
    assert torch.allclose(planner.mean, target, atol=0.03)
    assert planner.std.shape == (3, 2) and float(planner.std.max()) < 0.05


def test_cem_clips_optimum_outside_bounds():
    target = torch.tensor([[1.8, -0.4], [-3.0, 0.5]])
    objective, _ = quadratic(target)
    planner = make_planner("cem", horizon=2, candidates=200, iterations=6, top_k=20, action_low=-1.0, action_high=1.0)
    action = planner.plan(objective, 2, torch.Generator().manual_seed(1))
    assert torch.allclose(action, torch.tensor([1.0, -0.4]), atol=0.03)
    assert float(action[0]) <= 1.0
    assert torch.allclose(planner.mean[1], torch.tensor([-1.0, 0.5]), atol=0.03)


def test_cem_beats_random_shooting_at_equal_budget():
    horizon, dim, candidates, iterations = 5, 6, 100, 5
    cem = make_planner("cem", horizon=horizon, candidates=candidates, iterations=iterations, top_k=10)
    rs = make_planner("random_shooting", horizon=horizon, candidates=candidates * iterations)
    g = torch.Generator().manual_seed(2)
    cem_err, rs_err = [], []
    for _ in range(8):
        target = 1.6 * torch.rand(horizon, dim, generator=g) - 0.8
        objective, _ = quadratic(target)
        cem_err.append(float((cem.plan(objective, dim, g) - target[0]).norm()))
        rs_err.append(float((rs.plan(objective, dim, g) - target[0]).norm()))
    cem_err, rs_err = sum(cem_err) / 8, sum(rs_err) / 8
    assert cem_err < 0.5 * rs_err, (cem_err, rs_err)


def test_objective_called_once_per_iteration_with_all_candidates():
    objective, calls = quadratic(torch.zeros(4, 3))
    CEMPlanner(CEMSettings(horizon=4, candidates=37, iterations=3, top_k=5)).plan(objective, 3)
    assert calls == [(37, 4, 3)] * 3
    objective, calls = quadratic(torch.zeros(4, 3))
    RandomShootingPlanner(RandomShootingSettings(horizon=4, candidates=37)).plan(objective, 3)
    assert calls == [(37, 4, 3)]


def test_candidates_stay_in_bounds():
    seen = []

    def objective(actions):
        seen.append(actions)
        return actions.sum((1, 2))

    for name in ("cem", "icem", "random_shooting"):
        planner = make_planner(name, **SMALL[name], action_low=-0.5, action_high=2.0)
        planner.plan(objective, 2)
        planner.plan(objective, 2)          # icem: warm-started from the shifted plan and elites
    actions = torch.cat(seen)
    assert float(actions.min()) >= -0.5 and float(actions.max()) <= 2.0


@pytest.mark.parametrize("name", ["cem", "icem", "random_shooting"])
def test_seeded_generator_reproduces_plans(name):
    objective, _ = quadratic(torch.full((3, 2), 0.25))
    plan = lambda seed: make_planner(name, **SMALL[name]).plan(objective, 2, torch.Generator().manual_seed(seed))
    assert torch.equal(plan(5), plan(5))
    assert not torch.equal(plan(5), plan(6))


def test_random_shooting_returns_best_candidate():
    objective, _ = quadratic(torch.tensor([[0.4]]))
    planner = make_planner("random_shooting", horizon=1, candidates=2000)
    action = planner.plan(objective, 1, torch.Generator().manual_seed(0))
    assert abs(float(action) - 0.4) < 0.01
    assert planner.best_return == pytest.approx(-(float(action) - 0.4) ** 2)


def test_warm_start_from_init_mean():
    target = torch.tensor([[0.9], [-0.9]])
    objective, _ = quadratic(target)
    planner = make_planner("cem", horizon=2, candidates=10, iterations=1, top_k=2, init_std=0.01)
    action = planner.plan(objective, 1, torch.Generator().manual_seed(0), init_mean=target)
    assert abs(float(action) - 0.9) < 0.05
    with pytest.raises(ValueError, match=r"init_mean must have shape \(horizon, action_dim\) = \(2, 1\)"):
        planner.plan(objective, 1, init_mean=torch.zeros(3, 1))


def test_imagined_return_matches_per_candidate_loop():
    model = small_rssm()
    state = belief(model)
    actions = torch.rand(5, 4, 1, generator=torch.Generator().manual_seed(4)) * 2 - 1
    returns = imagined_return(model, state, t=3, latent="mean")(actions)
    assert returns.shape == (5,)
    with torch.no_grad():
        for n in (0, 3):
            s, total = state, 0.0
            for k in range(4):
                h, prior = model.prior_step(s, actions[n:n + 1, k], 3 + k)
                s = ModelState(h, prior.mean)
                total += float(model.reward(s.h, s.z).mean)
            assert float(returns[n]) == pytest.approx(total, abs=1e-5)


def test_imagined_return_sampling_is_reproducible_and_plans():
    model = small_rssm()
    state = belief(model)
    actions = torch.zeros(6, 3, 1)
    run = lambda seed: imagined_return(model, state, generator=torch.Generator().manual_seed(seed))(actions)
    assert torch.equal(run(0), run(0))
    sampled = run(0)
    assert sampled.shape == (6,) and len(set(sampled.tolist())) == 6  # one latent draw per candidate
    objective = imagined_return(model, ModelState(state.h[0], state.z[0]), latent="mean")  # unbatched state
    action = make_planner("cem", preset="cpu", horizon=3, candidates=30, top_k=3).plan(objective, 1)
    assert action.shape == (1,) and -1.0 <= float(action) <= 1.0


def test_time_decision_returns_seconds():
    objective, calls = quadratic(torch.zeros(2, 1))
    planner = make_planner("cem", horizon=2, candidates=10, iterations=2, top_k=2)
    seconds = time_decision(planner, objective, 1, repeats=2, warmup=1)
    assert seconds > 0 and len(calls) == 3 * 2


def test_presets():
    assert (PRESETS["planet"].horizon, PRESETS["planet"].candidates, PRESETS["planet"].iterations,
            PRESETS["planet"].top_k) == (12, 1000, 10, 100)
    assert make_planner("cem").settings == PRESETS["planet"]
    rs = make_planner("random_shooting", preset="cpu").settings
    cpu = make_planner("cem", preset="cpu").settings
    assert rs.candidates == cpu.candidates * cpu.iterations and rs.horizon == cpu.horizon


@pytest.mark.parametrize("name, settings, message", [
    ("mpc", {}, "unknown planner 'mpc'; valid choices: cem, icem, random_shooting"),
    ("cem", {"preset": "gpu"}, "unknown cem preset 'gpu'; valid choices: planet, cpu"),
    ("cem", {"horizon": 0}, "horizon must be an integer >= 1"),
    ("cem", {"candidates": -5}, "candidates must be an integer >= 1"),
    ("cem", {"iterations": 0}, "iterations must be an integer >= 1"),
    ("cem", {"top_k": 0}, "top_k must be an integer >= 1"),
    ("cem", {"candidates": 10, "top_k": 11}, "top_k must be <= candidates"),
    ("cem", {"horizon": 2.5}, "horizon must be an integer >= 1"),
    ("cem", {"init_std": 0.0}, "init_std must be > 0"),
    ("cem", {"action_low": 1.0, "action_high": -1.0}, "action_low < action_high"),
    ("random_shooting", {"candidates": 0}, "candidates must be an integer >= 1"),
    ("random_shooting", {"iterations": 3}, "unknown random_shooting settings iterations; valid settings: "
                                           "horizon, candidates, action_low, action_high"),
])
def test_bad_planner_settings(name, settings, message):
    with pytest.raises(ValueError, match=message):
        make_planner(name, **settings)


def test_bad_objective_settings_and_outputs():
    model = small_rssm()
    state = belief(model)
    with pytest.raises(ValueError, match="unknown latent mode 'mode'; valid choices: sample, mean"):
        imagined_return(model, state, latent="mode")
    with pytest.raises(ValueError, match="t must be an integer >= 1"):
        imagined_return(model, state, t=0)
    with pytest.raises(ValueError, match="one belief state; state.h has batch size 2"):
        imagined_return(model, ModelState(state.h.repeat(2, 1), state.z.repeat(2, 1)))
    with pytest.raises(ValueError, match="has no reward head"):
        imagined_return(NonlinearSSM(1, 1), ModelState(torch.zeros(1, 0), torch.zeros(1, 1)))
    with pytest.raises(ValueError, match=r"actions must be \(N, H, 1\)"):
        imagined_return(model, state)(torch.zeros(4, 3, 2))
    with pytest.raises(ValueError, match=r"shape \(8,\), one return per candidate, got \(8, 1\)"):
        make_planner("cem", horizon=2, candidates=8, top_k=2).plan(lambda a: a.sum(1), 1)
