"""The agent's belief has one implementation of the belief step: what the posterior's own rollout gives."""
import pytest
import torch

from agent.belief import Belief
from world_models.base import SequenceBatch
from world_models.posteriors import POSTERIORS, LocalGaussian, RefineSettings, make_posterior
from world_models.posteriors.refine import refine
from world_models.rollout import rollout
from world_models.rssm import RSSM

T = 6


def episode(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, 3, generator=g), torch.rand(T, 1, generator=g) * 2 - 1


@pytest.fixture
def model():
    torch.manual_seed(0)
    return RSSM((3,), 1, 8, 2, 8)


@pytest.mark.parametrize("name", [n for n in POSTERIORS if n != "amortized_smoothing"   # its belief cannot see x_{>t}
                                  and make_posterior(n, RSSM((3,), 1, 8, 2, 8)).has_encoder])
def test_filtering_belief_is_the_encoders_rollout_with_the_same_noise(model, name):
    """Without decision-time refinement the belief filters with the posterior's encoder: with the noise it
    drew, the encoder's rollout over the whole episode reaches the same states."""
    q = make_posterior(name, model)
    obs, actions = episode()
    belief = Belief(model, q)
    torch.manual_seed(5)
    for t in range(T):
        belief.update(obs[t], actions[t - 1] if t else torch.zeros(1))
    torch.manual_seed(5)
    noise = torch.cat([torch.randn(1, 1, model.z_dim) for _ in range(T)])      # one draw per filtering step
    prev = torch.cat([torch.zeros(1, 1), actions[:-1]])
    batch = SequenceBatch(obs[None], prev[None])
    encoder = q.amortized_part()
    with torch.no_grad():
        ro = rollout(model, encoder, batch, encoder.context(model, batch), noise=noise)
    for t in range(T):
        assert torch.allclose(belief.states[t + 1].h, ro.h[:, t], atol=1e-5)
        assert torch.allclose(belief.states[t + 1].z, ro.z[:, t], atol=1e-5)


@pytest.mark.parametrize("name", [n for n in POSTERIORS if make_posterior(n, RSSM((3,), 1, 8, 2, 8)).refinable])
def test_refining_belief_is_the_posteriors_improve_then_its_rollout(model, name):
    """With decision-time refinement, the last decision's state is, draw for draw, the posterior's own steps on
    the window: its amortized (or prior) start for the new step, `improve` from the kept parameters, then the last
    state of its rollout. A belief that refined with a copy of the update (e.g. gradient steps for the learned
    update of iterative_amortized) would differ."""
    q = make_posterior(name, model)
    if q.has_encoder:      # an untrained update would be the identity: give it something to do
        with torch.no_grad():
            for p in q.parameters():
                p.add_(0.05 * torch.randn_like(p))
    obs, actions = episode(1)
    window, settings = 4, RefineSettings(steps=2, lr=0.05)
    belief = Belief(model, q, settings, window)
    for t in range(T - 1):
        belief.update(obs[t], actions[t - 1] if t else torch.zeros(1))
    first, kept = T - window, list(belief.lam)
    torch.manual_seed(11)
    state = belief.update(obs[T - 1], actions[T - 2])
    torch.manual_seed(11)
    with torch.no_grad():
        encoder = q.amortized_part()
        step = SequenceBatch(obs[None, T - 1:], actions[None, T - 2:T - 1], start=belief.states[T - 1], t0=T - 1)
        ctx = None if encoder is None else encoder.context(model, step)
        start = q.params_from(rollout(model, encoder, step, ctx), ctx)[0, 0]
        batch = SequenceBatch(obs[None, first:], torch.cat([actions[first - 1:T - 1]])[None],
                              start=belief.states[first], t0=first)
        rng = torch.get_rng_state()
        lam = q.improve(model, batch, torch.stack(kept[first:] + [start])[None], settings)
        ro = rollout(model, q, batch, lam)
    assert torch.equal(state.h, ro.h[:, -1]) and torch.equal(state.z, ro.z[:, -1])
    torch.set_rng_state(rng)
    gradient = refine(model, q, batch, torch.stack(kept[first:] + [start])[None], settings)
    assert torch.equal(lam, gradient) == (type(q).improve is LocalGaussian.improve)
