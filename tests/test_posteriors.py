"""Every posterior trains on every model kind; semi-amortized refinement behaves as specified."""
import pytest
import torch

from tests.conftest import lgssm_data, random_lgssm
from world_models import bounds
from world_models.base import SequenceBatch
from world_models.networks import PIXEL_SHAPE
from world_models.nonlinear_ssm import NonlinearSSM
from world_models.posteriors import POSTERIORS, Objective, RefineSettings, make_posterior
from world_models.posteriors.losses import DetachedRefinementLoss, ElboLoss, Loss, frozen, negative_elbo
from world_models.posteriors.refine import refine, sequence_elbo
from world_models.rollout import rollout
from world_models.rssm import RSSM


def _model(kind):
    torch.manual_seed(0)
    if kind == "lgssm":
        return random_lgssm(0, 2, 3).float()
    if kind == "nonlinear":
        return NonlinearSSM(2, 3, 1, hidden=16)
    if kind == "rssm":
        return RSSM((3,), 1, deter_dim=16, z_dim=4, hidden=16)
    return RSSM(PIXEL_SHAPE, 1, deter_dim=16, z_dim=4, hidden=16)


def _batch(model, B=3, T=4):
    obs = torch.rand(B, T, *model.obs_shape)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 1] = False
    return SequenceBatch(obs, torch.randn(B, T, 1), mask, rewards=torch.randn(B, T), index=torch.arange(B))


SETTINGS = {"semi_amortized": dict(refine_settings=RefineSettings(steps=2, lr=0.1)),
            "per_sequence": dict(steps_per_update=2, train_lr=0.1, max_steps=4, n_samples=2, window=2)}


@pytest.mark.parametrize("kind", ["lgssm", "nonlinear", "rssm", "rssm_pixels"])
@pytest.mark.parametrize("name", POSTERIORS)
def test_every_posterior_takes_a_training_step_on_every_model(kind, name):
    model = _model(kind)
    q = make_posterior(name, model, **SETTINGS.get(name, {}))
    batch = _batch(model)
    params = list(model.parameters()) + list(q.parameters())
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-2)
    loss, info = q.training_loss(model, batch, Objective(free_nats=1.0 if kind.startswith("rssm") else 0.0))
    assert torch.isfinite(loss) and set(info) >= {"elbo", "kl", "log_lik"}
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, params)]
    assert any(moved[: len(list(model.parameters()))]), "no model parameter changed"
    if q.has_encoder:
        assert any(moved[len(list(model.parameters())):]), "no encoder parameter changed"
    if name == "per_sequence":  # local parameters were stored for warm starts
        assert not torch.isnan(q.store[batch.index, : batch.length]).any()
    # and it can be evaluated
    assert torch.isfinite(bounds.elbo(model, q, batch, 2)).all()


def test_smoother_sees_the_future_and_filter_does_not():
    model = NonlinearSSM(2, 3, 1, hidden=16)
    batch = _batch(model, B=2, T=6)
    changed = SequenceBatch(batch.obs.clone(), batch.actions, batch.mask)
    changed.obs[:, 4:] += 5.0
    for name, should_change in (("amortized", False), ("amortized_smoothing", True)):
        q = make_posterior(name, model)
        ctx, ctx2 = q.context(model, batch), q.context(model, changed)
        assert torch.allclose(ctx[:, :3], ctx2[:, :3]) != should_change, name


def test_refinement_does_not_lower_the_elbo_on_average():
    model = random_lgssm(3, 2, 2)
    batch = lgssm_data(model, 16, 10, seed=3)
    for opt, lr in (("adam", 0.05), ("sgd", 0.01)):
        q = make_posterior("semi_amortized", model,
                           refine_settings=RefineSettings(steps=10, lr=lr, optimizer=opt, n_samples=4)).double()
        with torch.no_grad():
            lam0 = q.initial_params(model, batch)
        lamK = refine(model, q, batch, lam0, q.refine_settings)
        torch.manual_seed(0)
        L0 = bounds.elbo(model, q, batch, 300, ctx=lam0)
        torch.manual_seed(0)
        LK = bounds.elbo(model, q, batch, 300, ctx=lamK)
        assert float(LK.mean()) > float(L0.mean()), (opt, float(L0.mean()), float(LK.mean()))


def _encoder_grad_norm(q):
    return sum(float(p.grad.abs().sum()) for p in q.encoder.parameters() if p.grad is not None)


def test_gradients_reach_the_encoder_only_in_the_unrolled_variant():
    model = NonlinearSSM(2, 3, 1, hidden=16)
    batch = _batch(model, B=4, T=5)
    s = RefineSettings(steps=3, lr=0.1)
    for unrolled in (True, False):
        q = make_posterior("semi_amortized", model, refine_settings=s, variant="unrolled" if unrolled else "detached")
        lam0 = q.initial_params(model, batch)
        lamK = refine(model, q, batch, lam0, s, unrolled=unrolled)
        loss = -sequence_elbo(model, q, batch, lamK, 1).sum()
        if unrolled:
            loss.backward()
            assert _encoder_grad_norm(q) > 0
        else:
            assert lamK.grad_fn is None and not lamK.requires_grad


def test_detached_training_loss_gives_the_encoder_only_its_own_gradient():
    """Encoder gradients of the full detached loss equal those of -ELBO(lambda^0) alone."""
    model = NonlinearSSM(2, 3, 1, hidden=16)
    batch = _batch(model, B=4, T=5)
    q = make_posterior("semi_amortized", model, refine_settings=RefineSettings(steps=3, lr=0.1))
    torch.manual_seed(7)
    loss, _ = q.training_loss(model, batch, Objective())
    loss.backward()
    full = [p.grad.clone() for p in q.encoder.parameters()]
    q.zero_grad()
    torch.manual_seed(7)
    with frozen(model):
        ro0 = rollout(model, q, batch, q.initial_params(model, batch))
        negative_elbo(ro0, Objective()).backward()
    for a, p in zip(full, q.encoder.parameters()):
        torch.testing.assert_close(a, p.grad)


@pytest.mark.parametrize("name, settings", [("semi_amortized", {"refine_settings": RefineSettings(steps=2, lr=0.1)}),
                                            ("iterative_amortized", {"iterations": 2})])
def test_refine_every_k_th_update_and_amortized_updates_between(name, settings):
    """refine_every = 3: calls 1 and 4 are the full detached loss (the learned update's included), calls 2 and 3
    exactly -ELBO(lambda^0) with gradients for the model and the encoder together; new_round() starts the count again;
    bad k and the unrolled variant are refused."""
    model = RSSM((3,), 1, deter_dim=16, z_dim=4, hidden=16)
    batch = _batch(model, B=4, T=5)
    every = make_posterior(name, model, refine_every=3, **settings)
    always = make_posterior(name, model, **settings)
    always.load_state_dict(every.state_dict())
    for call in range(1, 5):
        torch.manual_seed(call)
        loss, info = every.training_loss(model, batch, Objective(free_nats=1.0))
        loss.backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone()   # the update network's: none between
                 for p in [*model.parameters(), *every.parameters()]]
        model.zero_grad(), every.zero_grad()
        torch.manual_seed(call)
        if call in (1, 4):
            expected, _ = always.training_loss(model, batch, Objective(free_nats=1.0))
        else:
            expected = negative_elbo(rollout(model, always, batch, always.initial_params(model, batch)),
                                     Objective(free_nats=1.0))
            assert info["elbo"] == info["elbo_init"]
        expected.backward()
        torch.testing.assert_close(loss, expected)
        for g, p in zip(grads, [*model.parameters(), *always.parameters()]):
            torch.testing.assert_close(g, p.grad if p.grad is not None else torch.zeros_like(g))
        model.zero_grad(), always.zero_grad()
        assert info["refined"] == float(call in (1, 4))
    # the count starts again at each round of updates (the agent: after each episode), whatever k and the round's size
    assert every.training_loss(model, batch, Objective())[1]["refined"] == 0.0           # call 5
    every.loss.new_round()
    assert [every.training_loss(model, batch, Objective())[1]["refined"] for _ in range(4)] == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="integer k >= 1, got 0"):
        make_posterior(name, model, refine_every=0)
    if name == "semi_amortized":   # the only one with an unrolled variant
        with pytest.raises(ValueError, match="refine_every = 2 needs the detached variant"):
            make_posterior("semi_amortized", model, refine_every=2, variant="unrolled")


@pytest.mark.parametrize("name", POSTERIORS)
def test_the_loss_is_a_separate_object_and_can_be_swapped(name):
    """Each posterior carries its training loss as a losses.Loss; replaced by the plain ELBO loss, its training loss
    is -ELBO at its own context (for the semi-amortized posterior: at lambda^K, encoder and model together)."""
    model = NonlinearSSM(2, 3, 1, hidden=16)
    batch = _batch(model, B=4, T=5)
    q = make_posterior(name, model, **SETTINGS.get(name, {}))
    assert isinstance(q.loss, Loss)
    if name == "semi_amortized":
        assert isinstance(q.loss, DetachedRefinementLoss)
    q.loss = ElboLoss()
    torch.manual_seed(3)
    loss, _ = q.training_loss(model, batch, Objective())
    torch.manual_seed(3)
    expected = negative_elbo(rollout(model, q, batch, q.context(model, batch)), Objective())
    torch.testing.assert_close(loss, expected)


def test_a_window_with_its_start_state_continues_the_full_rollout():
    """rollout over steps [k, T) from the state after step k-1 (batch.start, batch.t0 = k) reproduces
    the tail of the rollout over [0, T); checked with a near-deterministic mean-field posterior."""
    from world_models.base import ModelState
    from world_models.rollout import rollout
    model = RSSM((3,), 1, deter_dim=8, z_dim=2, hidden=8)
    q = make_posterior("per_sequence", model)
    batch = _batch(model, B=2, T=6)
    lam = torch.cat([torch.randn(2, 6, 2), torch.full((2, 6, 2), -20.0)], -1)    # sigma = e^-20
    full = rollout(model, q, batch, lam)
    k = 3
    window = SequenceBatch(batch.obs[:, k:], batch.actions[:, k:], batch.mask[:, k:],
                           start=ModelState(full.h[:, k - 1], full.z[:, k - 1]), t0=k)
    tail = rollout(model, q, window, lam[:, k:])
    torch.testing.assert_close(tail.h, full.h[:, k:])
    torch.testing.assert_close(tail.log_lik, full.log_lik[:, k:])


def test_per_sequence_store_is_keyed_by_sequence_and_step():
    model = NonlinearSSM(2, 3, 1, hidden=8)
    q = make_posterior("per_sequence", model, steps_per_update=1, train_lr=0.1)
    batch = _batch(model, B=2, T=3)
    batch.index, batch.offset = torch.tensor([0, 4]), torch.tensor([2, 0])
    q.training_loss(model, batch, Objective())
    stored = ~torch.isnan(q.store[..., 0])
    assert stored[0, 2:5].all() and not stored[0, :2].any() and stored[4, :3].all() and not stored[1:4].any()
    # a state_dict with a grown store loads into a fresh posterior
    fresh = make_posterior("per_sequence", model)
    fresh.load_state_dict(q.state_dict())
    torch.testing.assert_close(fresh.store, q.store, equal_nan=True)


@pytest.mark.parametrize("name", POSTERIORS)
def test_batched_prior_rollout_equals_the_step_by_step_one(name):
    """The fast path (priors, log-densities and KLs after the time loop) computes the same values and
    gradients as the plain one, from the same random draws."""
    model = RSSM((5,), 1, 16, 4, 16).double()
    batch = _batch(model, B=3, T=6)
    # per_sequence's context is a fit (up to 5000 steps): a short one serves, the rollout is what is compared
    q = make_posterior(name, model, **({"max_steps": 20} if name == "per_sequence" else {})).double()
    ctx = q.context(model, batch)
    out = {}
    for batched in (False, True):
        torch.manual_seed(3)
        ro = rollout(model, q, batch, ctx, n_samples=2, batched_prior=batched, fused=False)   # fused: test_fast_paths
        model.zero_grad()
        ro.elbo.sum().backward(retain_graph=True)
        out[batched] = (ro, [p.grad.clone() for p in model.parameters() if p.grad is not None])
    for field in ("h", "z", "log_lik", "log_prior", "log_q", "kl", "q_mean", "q_std", "reward_log_lik"):
        torch.testing.assert_close(getattr(out[True][0], field), getattr(out[False][0], field))
    assert len(out[True][1]) == len(out[False][1]) > 0
    for a, b in zip(out[True][1], out[False][1]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", POSTERIORS)
def test_every_posterior_declares_its_family_and_its_parts(name):
    from world_models.posteriors.base import Family, FamilyKind
    from world_models.rssm import RSSM
    for model, kind in ((NonlinearSSM(2, 3, 1), FamilyKind.MEAN_FIELD), (RSSM((3,), 1, 8, 2, 8), FamilyKind.STRUCTURED)):
        q = make_posterior(name, model)
        assert isinstance(q.family, Family) and q.name == name
        part = q.amortized_part()
        assert (part is not None) == q.has_encoder
        if q.has_encoder:       # the encoder's kind; offsets exactly where the posterior refines them
            assert q.family.kind == kind and q.family.free_offsets == (part is not q) == q.refinable
        else:
            assert q.family == Family(FamilyKind.MEAN_FIELD) and q.refinable and q.default_decision_steps >= 1


def test_per_sequence_training_steps_ascend_the_training_objective():
    """Its local parameters learn as an encoder does, on -loss (free nats and reward included): with free nats
    above every KL_t the steps see no KL at all (without them, the ELBO's pull to the prior made the agent's latents
    collapse onto the prior)."""
    model = _model("rssm")
    batch = _batch(model)
    q = make_posterior("per_sequence", model, steps_per_update=2, train_lr=0.1)

    def trained(objective):
        q.store.fill_(float("nan"))
        torch.manual_seed(0)
        q.training_loss(model, batch, objective)
        return q.store[batch.index, : batch.length].clone()

    def refined(per_step):
        torch.manual_seed(0)
        return refine(model, q, batch, q.initial_params(model, batch), q.train_refine, per_step=per_step)

    no_kl = trained(Objective(free_nats=1e6))
    assert torch.allclose(no_kl, refined(lambda ro: ro.log_lik + ro.reward_log_lik))
    assert not torch.allclose(no_kl, refined(None))
    assert torch.allclose(trained(Objective(free_nats=0.0)), refined(lambda ro: ro.elbo + ro.reward_log_lik))
