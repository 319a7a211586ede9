"""iCEM (planners/icem.py) and its colored noise (planners/colored_noise.py) against known answers."""
import math

import pytest
import torch

from planners.colored_noise import powerlaw_noise
from planners.factory import make_planner
from planners.icem import PRESETS, ICEMPlanner, ICEMSettings


def spectrum_slope(y: torch.Tensor) -> float:
    """Least-squares slope of log mean periodogram against log frequency, over the bins strictly between 0 and
    Nyquist, of sequences y (..., H)."""
    horizon = y.shape[-1]
    power = torch.fft.rfft(y.double()).abs().pow(2).reshape(-1, horizon // 2 + 1).mean(0)
    f = torch.fft.rfftfreq(horizon, dtype=torch.float64)
    x, v = f[1:-1].log(), power[1:-1].log()
    x = x - x.mean()
    return float((x * (v - v.mean())).sum() / (x * x).sum())


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 2.5])
def test_colored_noise_has_the_requested_spectrum_and_unit_variance(beta):
    y = powerlaw_noise(beta, (2000, 2), 128, torch.Generator().manual_seed(0))
    assert y.shape == (2000, 2, 128)
    assert spectrum_slope(y) == pytest.approx(-beta, abs=0.1)
    assert float(y.var()) == pytest.approx(1.0, abs=0.05)
    # short horizons (the planner's 12, odd lengths) keep unit variance at every step, not only on average
    for horizon in (12, 13):
        y = powerlaw_noise(beta, (20000,), horizon, torch.Generator().manual_seed(1))
        assert torch.allclose(y.var(0), torch.ones(horizon), atol=0.05)


def test_colored_noise_is_smoother_for_larger_beta():
    lag1 = []
    for beta in (0.0, 1.0, 2.0):
        y = powerlaw_noise(beta, (5000,), 12, torch.Generator().manual_seed(2))
        lag1.append(float((y[:, 1:] * y[:, :-1]).mean()))
    assert abs(lag1[0]) < 0.05 and lag1[0] < lag1[1] < lag1[2]


def test_colored_noise_bad_arguments():
    with pytest.raises(ValueError, match="beta must be >= 0"):
        powerlaw_noise(-1.0, (3,), 12)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        powerlaw_noise(1.0, (3,), 0)


def receding_horizon_error(name: str, settings: dict, seeds: int = 6, decisions: int = 30) -> tuple[float, float]:
    """Model-predictive control on a known quadratic J(a) = -||a - a*_{t:t+H}||^2 whose optimum a* is a smooth
    trajectory (sines of random frequency and phase) that moves one step per decision, as the agent plans:
    RMS error of the action taken (after 3 decisions) and evaluated sequences per decision."""
    horizon, action_dim = 12, 2
    errors, sequences = [], 0
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(decisions + horizon, dtype=torch.float32)[:, None]
        omega, phase = 0.1 + 0.3 * torch.rand(1, action_dim, generator=g), 2 * math.pi * torch.rand(1, action_dim,
                                                                                                     generator=g)
        optimum = 0.7 * torch.sin(omega * t + phase)
        planner = make_planner(name, horizon=horizon, **settings)
        planner.reset()
        for k in range(decisions):
            target = optimum[k:k + horizon]

            def objective(actions):
                nonlocal sequences
                sequences += actions.shape[0]
                return -(actions - target).pow(2).sum((1, 2))

            action = planner.plan(objective, action_dim, g)
            if k >= 3:
                errors.append(float((action - target[0]).pow(2).mean().sqrt()))
    return sum(errors) / len(errors), sequences / (seeds * decisions)


def test_icem_is_more_accurate_than_cem_with_fewer_samples():
    """iCEM's cpu preset (warm starts, kept elites, colored noise at beta 2) takes actions closer to the optimum
    than plain CEM with more than twice the evaluated sequences."""
    cpu = PRESETS["cpu"]
    icem_error, icem_sequences = receding_horizon_error(
        "icem", dict(candidates=cpu.candidates, iterations=cpu.iterations, top_k=cpu.top_k))
    cem_error, cem_sequences = receding_horizon_error("cem", dict(candidates=200, iterations=5, top_k=20))
    assert icem_sequences < cem_sequences / 2, (icem_sequences, cem_sequences)
    assert icem_error < cem_error, (icem_error, cem_error)
    # and at equal sequences CEM is far behind
    cem_equal, _ = receding_horizon_error("cem", dict(candidates=90, iterations=5, top_k=9))
    assert icem_error < 0.6 * cem_equal, (icem_error, cem_equal)


def test_icem_population_elites_and_warm_start():
    """Objective calls: decaying populations, the previous decision's shifted elites at the first iteration, kept
    elites after it, the mean at the last; the next decision starts from the shifted mean; reset() forgets."""
    s = ICEMSettings(horizon=5, candidates=40, iterations=3, top_k=10)
    calls = []

    def objective(actions):
        calls.append(actions.clone())
        return -(actions - 0.3).pow(2).sum((1, 2))

    planner = ICEMPlanner(s)
    planner.plan(objective, 2, torch.Generator().manual_seed(0))
    assert [len(a) for a in calls] == [40, 32 + 3, 26 + 3 + 1]       # N gamma^-i, + kept (0.3 K), + the mean
    mean, elites = planner.mean.clone(), planner.elites.clone()
    calls.clear()
    planner.plan(objective, 2, torch.Generator().manual_seed(1))
    assert len(calls[0]) == 40 + 2                                    # + shifted elites (0.2 K)
    shifted = torch.cat([elites[:2, 1:], elites[:2, -1:]], 1)
    assert torch.equal(calls[0][-2:], shifted)
    first_mean = torch.cat([mean[1:], mean[-1:]])
    assert float((calls[0][:40].mean(0) - first_mean).abs().max()) < 0.25   # samples centred on the shifted mean
    planner.reset()
    fresh = ICEMPlanner(s)
    a = planner.plan(objective, 2, torch.Generator().manual_seed(3))
    assert torch.equal(a, fresh.plan(objective, 2, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match=r"previous decision planned shape \(5, 2\), this one \(5, 3\)"):
        planner.plan(objective, 3)


@pytest.mark.parametrize("settings, message", [
    ({"noise_beta": -0.5}, "noise_beta must be >= 0"),
    ({"keep_elites": 1.5}, "keep_elites is a fraction of top_k in"),
    ({"shift_elites": -0.1}, "shift_elites is a fraction of top_k in"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"population_decay": 0.8}, "population_decay must be >= 1"),
    ({"candidates": 10, "top_k": 11}, "top_k must be <= candidates"),
])
def test_icem_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        make_planner("icem", **settings)


def test_icem_presets_cut_sequences_per_decision():
    """The cpu preset evaluates over 3x fewer sequences per decision than cem's cpu preset (1500), the planet
    preset over 3x fewer than PlaNet's 10000."""
    cem_cpu = make_planner("cem", preset="cpu").settings
    assert PRESETS["cpu"].sequences_per_decision() * 3 < cem_cpu.candidates * cem_cpu.iterations
    assert PRESETS["planet"].sequences_per_decision() * 3 < 10000
    assert make_planner("icem").settings == PRESETS["planet"]
