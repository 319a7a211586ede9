"""Every speed-up computes what the plain code computes (benchmarks/bench_targets.py measures the speed)."""
import torch
from torch.nn import functional as F

from world_models.networks import softplus_std


def test_softplus_std_of_a_strided_chunk():
    out = torch.randn(100, 60, dtype=torch.float64)
    raw = out.chunk(2, -1)[1]
    assert not raw.is_contiguous()
    torch.testing.assert_close(softplus_std(raw, 0.1), F.softplus(raw) + 0.1, rtol=1e-15, atol=1e-15)


# --- the fused filtering loop (world_models/fused_filter.py) against the step-by-step rollout ----------
import pytest

from world_models.base import ModelState, SequenceBatch
from world_models.fused_filter import _FilterLoop, supported
from envs.toy_tasks import Synthetic10SSM
from world_models.linear_gaussian import LinearGaussianSSM
from world_models.nonlinear_ssm import NonlinearSSM
from world_models.posteriors.markov import MarkovGaussianLocal
from world_models.posteriors import KalmanPosterior, Objective, RefineSettings, make_posterior
from world_models.rollout import fast_loop, rollout, ssm_loop
from world_models.rssm import RSSM

F64 = torch.float64


def small_rssm(seed=0, obs_std=1.0):
    torch.manual_seed(seed)
    return RSSM((5,), 2, deter_dim=8, z_dim=3, hidden=6, obs_std=obs_std).to(F64)


def batch_with_gaps(B=4, T=7, start=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, T, generator=g) > 0.3
    return SequenceBatch(torch.randn(B, T, 5, generator=g, dtype=F64), torch.randn(B, T, 2, generator=g, dtype=F64),
                         mask, torch.randn(B, T, generator=g, dtype=F64), start=start)


def values_and_grads(model, post, batch, ctx, noise, fused, n_samples):
    """Every term of the rollout and the gradient of a loss that uses all four loop outputs."""
    ro = rollout(model, post, batch, ctx, n_samples, fused=fused, noise=noise)
    loss = -ro.elbo.sum() - ro.reward_log_lik.sum() + ro.log_q.sum() + 0.1 * ro.h.pow(2).sum()
    leaves = [ctx] + [p for p in list(model.parameters()) + list(post.parameters()) if p.requires_grad]
    if batch.start is not None:
        leaves += [batch.start.h, batch.start.z]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    terms = [ro.h, ro.z, ro.q_mean, ro.q_std, ro.log_lik, ro.log_prior, ro.log_q, ro.kl, ro.reward_log_lik]
    return [t.detach() for t in terms], grads


@pytest.mark.parametrize("name,n_samples,with_start,learned_std",
                         [("amortized", 1, False, False), ("amortized", 2, True, True),
                          ("amortized_smoothing", 1, True, False), ("semi_amortized", 2, False, True)])
def test_fused_loop_computes_the_rollout_and_its_gradients(name, n_samples, with_start, learned_std):
    model = small_rssm(obs_std=None if learned_std else 1.0)
    post = make_posterior(name, model, hidden=6).to(F64)
    start = None
    if with_start:
        start = ModelState(torch.randn(4, 8, dtype=F64, requires_grad=True), torch.randn(4, 3, dtype=F64, requires_grad=True))
    batch = batch_with_gaps(start=start)
    if name == "semi_amortized":   # encoder context with nonzero offsets, as after refinement
        lam0 = post.initial_params(model, batch)
        ctx = lam0 + 0.3 * torch.randn_like(lam0)
    else:
        ctx = post.context(model, batch)
    ctx = ctx.detach().requires_grad_(True)
    assert supported(model, post.mlp_head(ctx))
    noise = torch.randn(7, 4 * n_samples, 3, dtype=F64)
    plain_terms, plain_grads = values_and_grads(model, post, batch, ctx, noise, False, n_samples)
    fused_terms, fused_grads = values_and_grads(model, post, batch, ctx, noise, True, n_samples)
    for a, b in zip(plain_terms, fused_terms):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert sum(g is not None for g in plain_grads) > 10
    for a, b in zip(plain_grads, fused_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_fused_loop_passes_gradcheck():
    """Finite differences on every input of the loop (float64, tiny sizes): the hand-written backward.
    The embedding's and the head's precomputed parts end in the constant ones column the loop expects."""
    N, T, Dz, Dh, He, Hd = 3, 4, 3, 8, 6, 5
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: (0.5 * torch.randn(*s, generator=g, dtype=F64)).requires_grad_(True)
    eps = torch.randn(T, N, Dz, generator=g, dtype=F64)
    ones = lambda v: torch.cat([v, torch.ones(*v.shape[:-1], 1, dtype=F64)], -1)
    inputs = (rnd(N, T, He), rnd(N, T, Hd), rnd(N, T, 2 * Dz), rnd(N, Dh), rnd(N, Dz), rnd(He, Dz),
              rnd(3 * Dh, He + 1), rnd(3 * Dh, Dh + 1), rnd(Hd, Dh), rnd(2 * Dz, Hd + 1))
    loop = lambda pa, pc, off, h0, z0, *weights: _FilterLoop.apply(ones(pa), ones(pc), off, eps, h0, z0, *weights, 0.1)
    assert torch.autograd.gradcheck(loop, inputs)


def test_mean_field_path_computes_the_rollout_and_its_gradients():
    """Per-sequence lambda: all z drawn at once, then h from RSSM.deter_path (one torch.gru call)."""
    model = small_rssm(obs_std=None)
    post = make_posterior("per_sequence", model).to(F64)
    assert post.mlp_head(torch.zeros(1, 1, 6, dtype=F64)) is None
    start = ModelState(torch.randn(4, 8, dtype=F64, requires_grad=True), torch.randn(4, 3, dtype=F64, requires_grad=True))
    batch = batch_with_gaps(start=start)
    ctx = (0.5 * torch.randn(4, 7, 6, dtype=F64)).requires_grad_(True)
    noise = torch.randn(7, 8, 3, dtype=F64)
    assert_same(values_and_grads(model, post, batch, ctx, noise, False, 2),
                values_and_grads(model, post, batch, ctx, noise, True, 2))


def assert_same(plain, fast):
    """(terms, gradients) of a fast path equal the plain loop's, to float64 rounding."""
    for a, b in zip(plain[0], fast[0]):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    for a, b in zip(plain[1], fast[1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["amortized", "amortized_smoothing", "semi_amortized", "iterative_amortized"])
def test_given_latents_path_computes_the_rollout_and_its_gradients(name):
    """AIS's rollouts (z given): h from RSSM.deter_path, then the head on every step at once; the same terms and
    gradients (w.r.t. z, the context, the start state and every weight) as the step-by-step loop."""
    model = small_rssm(obs_std=None)
    post = make_posterior(name, model, hidden=6).to(F64)
    start = ModelState(torch.randn(4, 8, dtype=F64, requires_grad=True), torch.randn(4, 3, dtype=F64, requires_grad=True))
    batch = batch_with_gaps(start=start)
    ctx = post.initial_params(model, batch) if post.refinable else post.context(model, batch)
    if post.refinable:   # nonzero offsets, as in q* and after refinement
        ctx = ctx + 0.3 * torch.randn_like(ctx)
    ctx = ctx.detach().requires_grad_(True)
    z = torch.randn(4, 7, 3, dtype=F64, requires_grad=True)
    assert fast_loop(model, post, ctx, z) is not None

    def values_and_grads_at(fused):
        ro = rollout(model, post, batch, ctx, fused=fused, z=z)
        loss = (ro.log_lik + ro.log_prior - 0.7 * ro.log_q).sum() + ro.reward_log_lik.sum() + 0.1 * ro.h.pow(2).sum()
        leaves = [z, ctx, start.h, start.z] + [p for p in list(model.parameters()) + list(post.parameters())]
        terms = [ro.h, ro.z, ro.q_mean, ro.q_std, ro.log_lik, ro.log_prior, ro.log_q, ro.kl, ro.reward_log_lik]
        return [t.detach() for t in terms], torch.autograd.grad(loss, leaves, allow_unused=True)

    plain, fast = values_and_grads_at(False), values_and_grads_at(None)
    assert sum(g is not None for g in plain[1]) > 10
    assert_same(plain, fast)


def test_unrolled_refinement_and_other_models_take_the_plain_loop():
    model = small_rssm()
    unrolled = make_posterior("semi_amortized", model, hidden=6, variant="unrolled",
                              refine_settings=RefineSettings(steps=1)).to(F64)
    assert unrolled.mlp_head(torch.zeros(1, 1, 13, dtype=F64)) is None   # its refinement differentiates twice
    loss, _ = unrolled.training_loss(model, batch_with_gaps(), Objective())
    loss.backward()
    lgssm = LinearGaussianSSM(2, 5, action_dim=2).to(F64)          # an amortized head, but no RSSM
    encoder = make_posterior("amortized", lgssm).to(F64)
    batch = batch_with_gaps()
    assert not supported(lgssm, encoder.mlp_head(encoder.context(lgssm, batch)))
    exact = KalmanPosterior(lgssm)                                  # declares no step as data
    with pytest.raises(ValueError, match="fused"):
        rollout(lgssm, exact, batch, exact.context(lgssm, batch), fused=True)


@pytest.mark.parametrize("kind", ["lgssm", "nonlinear", "synthetic10"])
@pytest.mark.parametrize("name", ["amortized", "amortized_smoothing", "semi_amortized", "per_sequence",
                                  "amortized_markov", "markov_local"])
def test_fast_paths_on_models_without_h_compute_the_step_loop(kind, name):
    """SSMs without h_t with a mean-field or Markov-Gaussian q (rollout.ssm_loop): the first prior from the start
    state and the others in one call, q and the KLs of all steps at once; every term and its gradients as the step
    loop's, at the same latents, also for a window that starts later (t0 > 0) from a given state."""
    torch.manual_seed(0)
    model = {"lgssm": lambda: LinearGaussianSSM(2, 5, action_dim=2), "nonlinear": lambda: NonlinearSSM(2, 5, 2, hidden=8),
             "synthetic10": Synthetic10SSM}[kind]().to(F64)
    obs_dim, z_dim = model.obs_shape[0], model.z_dim
    if name == "markov_local":
        post = MarkovGaussianLocal(model)
    else:
        post = make_posterior(name, model, **({"hidden": 6} if name != "per_sequence" else {})).to(F64)
    g = torch.Generator().manual_seed(3)
    for start, t0 in ((None, 0), (ModelState(torch.zeros(4, 0, dtype=F64), torch.randn(4, z_dim, dtype=F64)), 5)):
        batch = SequenceBatch(torch.randn(4, 7, obs_dim, generator=g, dtype=F64),
                              torch.randn(4, 7, model.action_dim, generator=g, dtype=F64),
                              torch.rand(4, 7, generator=g) > 0.3, start=start, t0=t0)
        if name in ("per_sequence", "markov_local"):
            ctx = post.initial_params(model, batch)
            ctx = (ctx + 0.3 * torch.randn(ctx.shape, generator=g, dtype=F64)).requires_grad_(True)
        else:
            ctx = post.context(model, batch).detach().requires_grad_(True)
        z = torch.randn(8, 7, z_dim, generator=g, dtype=F64)
        assert ssm_loop(post, ctx.repeat(2, 1, 1)) is not None
        results = []
        for fused in (False, None):
            ro = rollout(model, post, batch, ctx, 2, fused=fused, z=z)
            loss = -ro.elbo.sum() + ro.log_weight.sum()
            leaves = [ctx] + [p for p in model.parameters() if p.requires_grad]
            results.append(([ro.log_lik, ro.log_prior, ro.log_q, ro.kl, ro.q_mean, ro.q_std],
                            torch.autograd.grad(loss, leaves, allow_unused=True)))
        assert_same(*results)


def test_fused_loop_on_one_sequence_from_a_state_filtered_without_gradients():
    """The agent's belief update: a window of one sequence starting from a state computed under no_grad,
    refined with gradients. (With N = 1 a transposed copy is no copy; the loop must not write into its input.)"""
    model = small_rssm()
    post = make_posterior("semi_amortized", model, hidden=6).to(F64)
    with torch.no_grad():
        first = batch_with_gaps(B=1)
        ro = rollout(model, post.encoder, first, post.encoder.context(model, first))
        window = batch_with_gaps(B=1, seed=2, start=ModelState(ro.h[:, -1], ro.z[:, -1]))
        lam = post.params_from(None, post.encoder.context(model, window)).requires_grad_(True)
        noise = torch.randn(7, 1, 3, dtype=F64)
        with torch.enable_grad():
            grads = [torch.autograd.grad(rollout(model, post, window, lam, fused=f, noise=noise).elbo.sum(), lam)[0]
                     for f in (False, True)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


# --- the fused imagination loop (world_models/fused_imagine.py) against model.prior_step / model.reward ----
from world_models.fused_imagine import imagined_reward_sum, supported as imagine_supported


@pytest.mark.parametrize("sampled", [True, False])
def test_fused_imagination_sums_the_step_by_step_rewards(sampled):
    torch.manual_seed(0)
    model = RSSM((5,), 2, deter_dim=160, z_dim=12, hidden=120).to(F64)   # wide enough for elu_'s exp path
    assert imagine_supported(model)
    N, H = 200, 5
    g = torch.Generator().manual_seed(3)
    actions = torch.rand(N, H, 2, generator=g, dtype=F64) * 2 - 1
    state = ModelState(torch.randn(1, 160, generator=g, dtype=F64), torch.randn(1, 12, generator=g, dtype=F64))
    noise = torch.randn(H, N, 12, generator=g, dtype=F64) if sampled else None
    with torch.no_grad():
        s, expected = ModelState(state.h.expand(N, -1), state.z.expand(N, -1)), torch.zeros(N, dtype=F64)
        for k in range(H):
            h, prior = model.prior_step(s, actions[:, k], k + 1)
            z = prior.mean + prior.stddev * noise[k] if sampled else prior.mean
            expected += model.reward(h, z).mean
            s = ModelState(h, z)
    torch.testing.assert_close(imagined_reward_sum(model, state.h, state.z, actions, noise), expected,
                               rtol=1e-12, atol=1e-12)


def test_fast_elu_is_elu():
    from world_models.networks import elu_
    for shape in [(10, 20), (1000, 200)]:      # both branches
        x = 3 * torch.randn(*shape, dtype=F64)
        torch.testing.assert_close(elu_(x.clone()), F.elu(x), rtol=0, atol=1e-15)
    x = 3 * torch.randn(1000, 200)
    torch.testing.assert_close(elu_(x.clone()), F.elu(x), rtol=0, atol=2e-7)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_planning_objective_with_kept_buffers(dtype, monkeypatch):
    """imagined_return on the fused loop keeps its buffers (and its noise buffer) between calls, also across
    calls of other sizes: with prior means it returns what its step-by-step path returns (float64: to
    rounding; float32: to float32 accuracy), and with sampled
    latents what a fresh objective returns from the same generator state."""
    import planners.objectives as objectives
    torch.manual_seed(0)
    model = RSSM((5,), 2, deter_dim=40, z_dim=6, hidden=30).to(dtype)
    g = torch.Generator().manual_seed(1)
    state = ModelState(torch.randn(1, 40, generator=g, dtype=dtype), torch.randn(1, 6, generator=g, dtype=dtype))
    calls = [torch.rand(n, 4, 2, generator=g, dtype=dtype) * 2 - 1 for n in (300, 300, 7, 300)]
    fused_mean = objectives.imagined_return(model, state, t=2, latent="mean")
    kept, fresh_gen = objectives.imagined_return(model, state, generator=torch.Generator().manual_seed(9)), \
        torch.Generator().manual_seed(9)
    sampled = [(kept(a), objectives.imagined_return(model, state, generator=fresh_gen)(a)) for a in calls]
    monkeypatch.setattr(objectives, "supported", lambda model: False)
    plain_mean = objectives.imagined_return(model, state, t=2, latent="mean")
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == F64 else dict(rtol=1e-5, atol=1e-5)
    for actions, (with_kept, with_fresh) in zip(calls, sampled):
        torch.testing.assert_close(fused_mean(actions), plain_mean(actions), **tol)
        assert torch.equal(with_kept, with_fresh)
