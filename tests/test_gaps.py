"""Gap decomposition on a linear-Gaussian model, where the approximation gap is known exactly."""
import json
import math

import pytest
import torch

from analysis.decompose import EncoderCheckpoints, GapSettings, fresh_encoder, smoother_from_filter
from analysis.gaps import gap_decomposition, mean_field_q_star, refinement_curve, same_family_q_star, summarize
from world_models.posteriors.refine import refine
from analysis.toy_experiment import main as toy_main
from tests.conftest import lgssm_data, random_lgssm
from world_models import bounds
from world_models.base import SequenceBatch, sample_sequences
from world_models.kalman import mean_field_elbo, posterior_precision_diagonal
from world_models.posteriors import Objective, RefineSettings, make_posterior
from world_models.rollout import rollout
from world_models.rssm import RSSM
from world_models.training import train


def test_gaps_on_lgssm_match_the_analytic_approximation_gap():
    model = random_lgssm(11, z_dim=2, obs_dim=2)
    model.requires_grad_(False)
    batch = lgssm_data(model, 12, 8, seed=12)
    encoders = {}
    for label, name in (("filter", "amortized"), ("smoother", "amortized_smoothing")):
        q = make_posterior(name, model, hidden=16).double()
        train(lambda b, q=q: q.training_loss(model, b, Objective()), q.parameters(), batch, 40, 12, lr=1e-2)
        encoders[label] = q
    q_star = make_posterior("per_sequence", model, lr=0.05, n_samples=50, window=50, patience=4, max_steps=1500)
    log_p = bounds.exact_log_marginal(model, batch)
    q_stars = {label: same_family_q_star(model, batch, q, q_star.fit) for label, q in encoders.items()}
    q_stars["mean-field"] = mean_field_q_star(model, batch, q_star)
    res = gap_decomposition(model, batch, encoders, q_stars, log_p, n_samples=2000, own="filter")
    g, T = res["gaps"], batch.length
    assert res["failures"] == [] and res["above_log_px"] == {}
    # identities: inference = approximation + amortization; conditioning = difference of amortization gaps
    assert abs(g["inference"]["mean"] - g["approximation[filter]"]["mean"] - g["amortization"]["mean"]) < 1e-9
    # the encoders are mean-field here: all three q* reach the analytic mean-field optimum (closed-form ELBOs, no
    # Monte Carlo error: measured 0.005-0.006 nats per sequence below it from every start, four seeds)
    p = model.params()
    opt_var = 1 / torch.diagonal(posterior_precision_diagonal(p, batch.mask), dim1=-2, dim2=-1)
    best_elbo = mean_field_elbo(p, batch.obs, batch.actions, batch.mask, model.smoother(batch).mean, opt_var)
    for label, q in q_stars.items():
        mu, log_std = q.ctx.chunk(2, -1)
        below = best_elbo - mean_field_elbo(p, batch.obs, batch.actions, batch.mask, mu, (2 * log_std).exp())
        assert 0 <= float(below.mean()) < 0.02, (label, float(below.mean()))
    # the approximation gap equals log p(x) minus the closed-form ELBO of the analytic mean-field optimum
    exact_gap = log_p - best_elbo
    assert abs(g["approximation"]["mean"] - float(exact_gap.mean())) < 0.05, (g["approximation"], float(exact_gap.mean()))
    assert g["approximation"]["mean"] > 0.05          # mean-field cannot represent temporal correlation
    assert g["amortization[filter]"]["mean"] > 0 and g["inference"]["mean"] > g["approximation"]["mean"]
    assert g["approximation"]["mean_per_step"] * T == g["approximation"]["mean"]


def test_refinement_curve_closes_the_amortization_gap():
    model = random_lgssm(13, z_dim=2, obs_dim=2)
    batch = lgssm_data(model, 10, 8, seed=14)
    sa = make_posterior("semi_amortized", model, refine_settings=RefineSettings(lr=0.05, n_samples=4)).double()
    q_star = make_posterior("per_sequence", model, lr=0.05, n_samples=50, window=50, patience=4, max_steps=1500)
    ref = bounds.elbo(model, q_star, batch, 1000, ctx=q_star.context(model, batch))
    rows = refinement_curve(model, batch, sa, (0, 5, 100), eval_samples=500, reference=ref)
    gaps = [r["gap"]["mean"] for r in rows]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.1 * gaps[0], gaps
    assert rows[0]["seconds"] < rows[1]["seconds"] < rows[2]["seconds"]      # one run, read off at each K


def test_refinement_reports_each_step_of_the_run_it_returns():
    model = random_lgssm(3, z_dim=2, obs_dim=2)
    batch = lgssm_data(model, 4, 6, seed=4)
    sa = make_posterior("semi_amortized", model, refine_settings=RefineSettings(steps=7, lr=0.05)).double()
    lam0 = sa.initial_params(model, batch)
    seen = {}
    torch.manual_seed(0)
    final = refine(model, sa, batch, lam0, sa.refine_settings, on_step=lambda k, lam: seen.update({k: lam}))
    torch.manual_seed(0)
    assert torch.equal(final, refine(model, sa, batch, lam0, sa.refine_settings))
    assert sorted(seen) == list(range(1, 8)) and torch.equal(seen[7], final) and not torch.equal(seen[1], final)


def test_summarize_standard_error():
    s = summarize(torch.tensor([1.0, 2.0, 3.0, 4.0]), length=2)
    assert s["mean"] == 2.5 and abs(s["sem"] - 1.2909944487358056 / 2) < 1e-9   # std of 1..4 is sqrt(5/3)
    assert s["mean_per_step"] == 1.25


def test_toy_experiment_end_to_end(tmp_path):
    toy_main(["--task", "synthetic9", "--out", str(tmp_path), "--train-sequences", "24", "--test-sequences", "6",
              "--steps", "3", "--batch-size", "8", "--gap-sequences", "4", "--eval-samples", "8", "--encoder-steps", "2",
              "--q-star-max-steps", "4", "--q-star-samples", "2", "--curve-steps", "0", "1",
              "--posteriors", "amortized", "semi_amortized", "per_sequence", "--threads", "1", "--seeds", "2"])
    r = json.loads((tmp_path / "results.json").read_text())
    assert set(r["methods"]) == {"kalman", "amortized", "semi_amortized", "per_sequence"}
    m = r["methods"]["amortized"]
    assert set(m["seeds"]) == {"0", "1"} and m["test_log_lik"]["seeds"] == 2
    per_seed = [m["seeds"][k]["test_log_lik"]["mean"] for k in ("0", "1")]
    assert m["test_log_lik"]["mean"] == pytest.approx(sum(per_seed) / 2)
    assert m["test_log_lik"]["sem"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2)   # s.e. over 2 seeds
    assert m["gaps"]["test"]["gaps"]["approximation"]["seeds"] == 2
    assert r["true_model"]["estimator"] == "exact (Kalman)"
    for png in ("loglik.png", "noise.png", "gaps.png", "refinement.png"):
        assert (tmp_path / png).stat().st_size > 1000
    md = (tmp_path / "results.md").read_text()
    assert "Gap decomposition on test sequences" in md and "| per_sequence |" in md and "| true model |" in md
    true_gaps = r["true_model"]["gaps"]["test"]
    assert {"filter", "smoother", "mean-field", "markov"} == set(true_gaps["q_star"])
    assert true_gaps["log_px_estimator"]["estimator"] == "exact (Kalman)"


def test_toy_experiment_on_a_multimodal_task_with_missing_runs(tmp_path):
    """log p(x) is exact by quadrature (a 1-d latent) where its grid check passes, else AIS (or, where another lower
    bound is significantly above AIS, the tightest of those); the BDMC sandwich of each model says how far AIS can
    be trusted on it; gaps at the true model too."""
    toy_main(["--task", "square_gaps", "--out", str(tmp_path), "--train-sequences", "16", "--test-sequences", "4",
              "--steps", "3", "--batch-size", "8", "--gap-sequences", "3", "--eval-samples", "8", "--encoder-steps", "2",
              "--q-star-max-steps", "4", "--q-star-samples", "2", "--curve-steps", "0", "1", "--ais-steps", "5",
              "--ais-chains", "2", "--bdmc-sequences", "2", "--posteriors", "amortized", "--threads", "1", "--seeds", "1"])
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["true_model"]["gaps"]["test"]["log_px_estimator"]["estimator"] == "exact (quadrature)"
    for gaps in (r["true_model"]["gaps"], r["methods"]["amortized"]["seeds"]["0"]["gaps"]):
        record = gaps["test"]["log_px_estimator"]
        if record["estimator"] != "exact (quadrature)":
            assert not record["quadrature"]["trusted"] and any(k.startswith("mean_ais-5x2") for k in record)
            assert record["estimator"].startswith("ais-5x2") or record["estimator"] in record["above_ais"]
        assert gaps["bdmc"]["sequences"] == 2 and "markov" in gaps["test"]["q_star"]
    assert "BDMC sandwich" in (tmp_path / "results.md").read_text()


def test_a_log_px_estimate_below_an_elbo_is_flagged():
    """log p(x) >= ELBO; an estimate that falls below an ELBO is reported as unreliable."""
    model = random_lgssm(15, z_dim=2, obs_dim=2)
    model.requires_grad_(False)
    batch = lgssm_data(model, 8, 6, seed=16)
    q_star = make_posterior("per_sequence", model, lr=0.05, n_samples=20, window=20, patience=2, max_steps=200)
    exact = bounds.exact_log_marginal(model, batch)
    q_stars = {"mean-field": mean_field_q_star(model, batch, q_star)}
    assert gap_decomposition(model, batch, {}, q_stars, exact, n_samples=200)["warnings"] == []
    flagged = gap_decomposition(model, batch, {}, q_stars, exact - 5.0, n_samples=200)
    assert len(flagged["warnings"]) == 1 and "L[q*[mean-field]]" in flagged["warnings"][0]
    assert list(flagged["above_log_px"]) == ["q*[mean-field]"]


@pytest.mark.parametrize("kind", ["rssm", "lgssm"])
def test_smoother_from_filter_starts_as_the_filter(kind):
    """The smoother the decomposition fits starts from the fitted filter with zero weight on the future: it
    computes the same posterior (so fitting it can only add what x_{>t} tells)."""
    torch.manual_seed(0)
    if kind == "rssm":
        model = RSSM((3,), 1, deter_dim=8, z_dim=2, hidden=8).double()
        batch = SequenceBatch(torch.randn(4, 6, 3, dtype=torch.float64), torch.randn(4, 6, 1, dtype=torch.float64))
    else:
        model = random_lgssm(3, z_dim=2, obs_dim=2)
        batch = lgssm_data(model, 4, 6, seed=4)
    filt = make_posterior("amortized", model).double()
    for p in filt.parameters():
        torch.nn.init.normal_(p, std=0.3)
    smoother = smoother_from_filter(model, filt)
    assert smoother.smoothing and any(p.abs().sum() > 0 for p in smoother.bwd.parameters())
    torch.manual_seed(1)
    a = rollout(model, filt, batch, filt.context(model, batch))
    torch.manual_seed(1)
    b = rollout(model, smoother, batch, smoother.context(model, batch))
    torch.testing.assert_close(a.q_mean, b.q_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.q_std, b.q_std, rtol=0, atol=1e-12)


def test_the_fresh_encoder_guard_leaves_a_fit_unchanged_where_the_last_iterate_is_not_worse():
    """Checking the encoder every 50 steps draws its samples outside the global random stream: the fit is the plain
    Adam fit of the same seeds, weight for weight, and its last iterate is kept."""
    model = random_lgssm(5, z_dim=2, obs_dim=2)
    model.requires_grad_(False)
    data = lgssm_data(model, 40, 8, seed=6)
    s = GapSettings(encoder_steps=120, encoder_batch_size=16, seed=3)
    torch.manual_seed(9)
    guarded = fresh_encoder("amortized", model, data, s)
    torch.manual_seed(9)
    plain = make_posterior("amortized", model).double()
    train(lambda b: plain.training_loss(model, b, Objective()), plain.parameters(), data, 120, 16, lr=s.encoder_lr,
          seed=s.seed + 7, cosine_decay=s.encoder_lr_schedule == "cosine")
    for a, b in zip(guarded.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    r = guarded.fit_record
    assert r["kept"] == "last" and r["checkpoints"] == 3 and r["best_elbo_per_step"] >= r["last_elbo_per_step"]
    assert r["skipped_steps"] == 0


@pytest.mark.parametrize("last", ["ruined", "nan"])
def test_the_fresh_encoder_guard_restores_the_best_checkpoint_when_the_last_is_worse(last):
    """A last checkpoint ruined by a random step, or with no finite ELBO (on square a Markov encoder's sampled z ran
    away; the NaN difference made the paired test false and the NaN last iterate was kept; NaN weights made torch's
    validation raise), restores the best."""
    model = random_lgssm(5, z_dim=2, obs_dim=2)
    model.requires_grad_(False)
    data = lgssm_data(model, 40, 8, seed=6)
    q = fresh_encoder("amortized", model, data, GapSettings(encoder_steps=100, encoder_batch_size=16))
    good = {k: v.clone() for k, v in q.state_dict().items()}
    guard = EncoderCheckpoints(model, q, data, steps=100, seed=0)
    guard(49)                                   # a checkpoint of the fitted encoder
    if last == "ruined":
        with torch.no_grad():
            for p in q.parameters():            # then a step that ruins it
                p.add_(torch.randn_like(p))
        guard(99)
    else:                                       # NaN weights: NaN distribution parameters, no ELBO (-inf)
        with torch.no_grad():
            for p in q.parameters():
                p.fill_(math.nan)
        guard(99)
        assert guard.checks[-1][1].eq(-math.inf).all()
    r = guard.keep_best()
    assert r["kept"] == "best" and r["best_step"] == 50 and r["last_elbo_per_step"] < r["best_elbo_per_step"]
    for k, v in q.state_dict().items():
        assert torch.equal(v, good[k])


def small_rssm_problem():
    torch.manual_seed(0)
    model = RSSM((3,), 1, deter_dim=8, z_dim=2, hidden=8).double()
    model.requires_grad_(False)
    batch = SequenceBatch(torch.randn(6, 8, 3, dtype=torch.float64), torch.randn(6, 8, 1, dtype=torch.float64),
                          index=torch.arange(6))
    filt = make_posterior("amortized", model, hidden=8).double()
    train(lambda b: filt.training_loss(model, b, Objective()), filt.parameters(), batch, 30, 6, lr=1e-2)
    return model, batch, filt


def test_on_an_rssm_the_same_family_q_star_contains_the_encoder_and_flags_fire():
    """The RSSM's encoder is structured through h_t: its q* has free offsets from its output, so its amortization
    gap is >= 0 (no failure); an ELBO above a log p(x) set too low on purpose is flagged; a q* made worse than its
    encoder on purpose is a failed check, not a result."""
    from analysis.gaps import QStar, as_refinable
    from world_models.posteriors.optimum import OptimumSettings
    model, batch, filt = small_rssm_problem()
    q_stars = {"filter": same_family_q_star(model, batch, filt, OptimumSettings(max_steps=200, window=20))}
    assert "h_t" in str(q_stars["filter"].posterior.family) and "offsets" in str(q_stars["filter"].posterior.family)
    log_p = bounds.smc(model, None, batch, 500)
    res = gap_decomposition(model, batch, {"filter": filt}, q_stars, log_p, n_samples=500, own="filter")
    g = res["gaps"]["amortization[filter]"]
    assert res["failures"] == [] and g["mean"] > -3 * g["sem"]
    low = bounds.elbo(model, filt, batch, 500) - 1.0                     # below the encoder's ELBO: impossible
    flagged = gap_decomposition(model, batch, {"filter": filt}, q_stars, low, n_samples=500, own="filter")
    assert "filter" in flagged["above_log_px"] and any("L[filter]" in w for w in flagged["warnings"])
    worse = as_refinable(model, filt)
    ctx = q_stars["filter"].ctx.clone()
    ctx[..., -2:] = ctx[..., -2:] + 1.5                                   # log std offsets: far too wide
    bad = {"filter": QStar(worse, ctx, "made worse on purpose", q_stars["filter"].report, 0.0)}
    failed = gap_decomposition(model, batch, {"filter": filt}, bad, log_p, n_samples=500, own="filter")
    assert len(failed["failures"]) == 1 and "filter" in failed["failures"][0]


def test_toy_experiment_resumes_what_is_done_refuses_other_settings_and_redoes_another_protocol(tmp_path, monkeypatch):
    import analysis.toy_experiment as toy
    args = ["--task", "synthetic9", "--out", str(tmp_path), "--train-sequences", "16", "--test-sequences", "4",
            "--steps", "2", "--batch-size", "8", "--gap-sequences", "3", "--eval-samples", "4", "--encoder-steps", "1",
            "--q-star-max-steps", "2", "--q-star-samples", "1", "--curve-steps", "0", "--ais-steps", "0",
            "--posteriors", "amortized", "--seeds", "2"]
    toy_main(args)
    path = tmp_path / "results.json"
    first = json.loads(path.read_text())
    cut = json.loads(path.read_text())
    del cut["methods"]["amortized"]["seeds"]["0"]               # as if seed 0 had failed or been removed
    path.write_text(json.dumps(cut))
    written, write = [], toy.write                              # what each write of the resumed call holds
    monkeypatch.setattr(toy, "write", lambda results, *a: written.append(json.loads(json.dumps(results))) or write(
        results, *a))
    toy_main(args + ["--resume"])
    monkeypatch.undo()
    # a call stopped at any point would have left at least the run it found (it used to write the runs it had
    # replayed so far, which lost results when a resumed call was stopped early)
    assert len(written) == 2 and all(w["methods"]["amortized"]["seeds"]["1"] == cut["methods"]["amortized"]["seeds"]["1"]
                                     for w in written)
    again = json.loads(path.read_text())
    kept, redone = again["methods"]["amortized"]["seeds"], first["methods"]["amortized"]["seeds"]
    assert kept["1"]["train_seconds"] == redone["1"]["train_seconds"]          # kept, not rerun
    assert list(kept) == ["0", "1"] and kept["0"]["train_seconds"] != redone["0"]["train_seconds"]
    assert again["true_model"]["gaps"] == first["true_model"]["gaps"]
    with pytest.raises(SystemExit, match="other settings.*steps"):
        toy_main([a if a != "2" else "3" for a in args[:12]] + args[12:] + ["--resume"])
    del again["settings"]["q_star_lr_halvings"]                  # written before the setting existed: it did 0
    path.write_text(json.dumps(again))
    toy_main(args + ["--resume"])
    assert json.loads(path.read_text())["methods"]["amortized"]["seeds"] == kept
    with pytest.raises(SystemExit, match="other settings.*q_star_lr_halvings"):
        toy_main(args + ["--q-star-lr-halvings", "1", "--resume"])
    again = json.loads(path.read_text())
    again["settings"]["protocol"] = 1                            # results of an earlier measurement protocol:
    path.write_text(json.dumps(again))                           # nothing is kept
    toy_main(args + ["--resume"])
    fresh = json.loads(path.read_text())
    assert fresh["settings"]["protocol"] == first["settings"]["protocol"] != 1
    assert all(fresh["methods"]["amortized"]["seeds"][k]["train_seconds"] != kept[k]["train_seconds"] for k in kept)


def test_a_run_whose_training_diverges_is_recorded_left_out_of_the_means_and_shown(tmp_path):
    """A training that meets a non-finite loss (here a real runaway: Adam at lr 1e4) is recorded as a failed run with
    the step where it stopped, not evaluated, and not counted in the means over seeds; the experiment goes on."""
    from tqdm import tqdm
    from analysis import toy_experiment as te
    from analysis.toy_plots import markdown
    from envs.toy_tasks import generate, make_task
    from world_models.training import minibatch
    task = make_task("synthetic10")
    runs = {}
    for lr in ("1e-2", "1e4"):
        args = te.parse_args(["--task", "synthetic10", "--train-sequences", "16", "--test-sequences", "4", "--steps", "20",
                              "--batch-size", "8", "--gap-sequences", "3", "--eval-samples", "4", "--encoder-steps", "1",
                              "--q-star-max-steps", "2", "--q-star-samples", "1", "--curve-steps", "0", "--ais-steps", "0",
                              "--lr", lr, "--out", str(tmp_path)])
        train_data, _ = generate(task, args.train_sequences, seed=0)
        test_data, _ = generate(task, args.test_sequences, seed=1)
        gap_sets = {"train": minibatch(train_data, torch.arange(3)), "test": minibatch(test_data, torch.arange(3))}
        runs[lr] = te.train_and_evaluate(task, "amortized", args, 3, train_data, test_data, gap_sets,
                                         tqdm(disable=True), f"amortized lr {lr}")
    ok, diverged = runs["1e-2"], runs["1e4"]
    assert "training_error" not in ok and "test_log_lik" in ok and "gaps" in ok
    assert diverged["training_error"].startswith("non-finite") and diverged["training_error"].endswith("(of 20)")
    assert "test_log_lik" not in diverged and "gaps" not in diverged and diverged["final_train_elbo_per_step"] is None
    assert (tmp_path / "models" / "amortized_lr_1e4.pt").exists()             # kept, to look at why
    both = te.over_seed_runs([ok, diverged])
    assert both["seeds_evaluated"] == 1 and both["test_log_lik"]["mean"] == ok["test_log_lik"]["mean"]
    assert both["failed_seeds"] == [f"seed 1 (torch seed 3): training diverged: {diverged['training_error']}"]
    results = {"task": "synthetic10", "settings": {"seeds": 2}, "machine": "test",
               "true_model": {"test_log_lik": ok["test_log_lik"], "estimator": "test", "noise": ok["noise"]},
               "methods": {"amortized": {**both, "seeds": {"0": ok, "1": diverged}},
                           "per_sequence": {**te.over_seed_runs([diverged]), "seeds": {"0": diverged}}}}
    md = markdown(results)
    assert f"- amortized seed 1 (torch seed 3): training diverged: {diverged['training_error']}" in md
    assert "| per_sequence | every seed failed (listed below) |" in md
    assert f"- per_sequence seed 0 (torch seed 3): training diverged: {diverged['training_error']}" in md


def grid_log_px(obs: torch.Tensor, n: int = 1001, bound: float = 10.0) -> torch.Tensor:
    """Exact log p(x) of `square`'s true model (z_1 ~ N(0, 1), z_t ~ N(0.9 z_{t-1}, 1), x_t ~ N(z_t^2, 0.5)) per
    sequence (B, T) by the forward recursion on a grid of z (quadrature; on the test's data a grid of 4001 points
    over [-14, 14] agrees to 1e-11)."""
    g = torch.linspace(-bound, bound, n, dtype=torch.float64)
    log_dz = math.log(float(g[1] - g[0]))
    log_normal = lambda v, m, var: -0.5 * math.log(2 * math.pi * var) - 0.5 * (v - m) ** 2 / var
    transition = log_normal(g[:, None], 0.9 * g[None, :], 1.0)      # [z_t, z_{t-1}]
    out = []
    for x in obs.double():
        log_alpha = log_normal(g, 0.0, 1.0) + log_normal(x[0], g ** 2, 0.5)
        for xt in x[1:]:
            log_alpha = torch.logsumexp(transition + log_alpha[None, :], 1) + log_dz + log_normal(xt, g ** 2, 0.5)
        out.append(torch.logsumexp(log_alpha, 0) + log_dz)
    return torch.stack(out)


def test_quadrature_equals_kalman_on_a_1d_lgssm_with_missing_steps():
    """The grid recursion against the Kalman filter (float64), a fully missing first step and random gaps included;
    sequences with different actions are grouped."""
    from world_models import quadrature
    model = random_lgssm(3, z_dim=1, obs_dim=2)
    actions = torch.full((6, 10, 1), 0.5, dtype=torch.float64)
    actions[3:] = -1.0
    _, obs = sample_sequences(model, actions, torch.Generator().manual_seed(1))
    mask = torch.rand(6, 10, generator=torch.Generator().manual_seed(2)) > 0.3
    mask[:, 0] = False
    batch = SequenceBatch(obs, actions, mask)
    values, rec = quadrature.log_marginal(model, batch)
    assert rec["trusted"] and rec["error"] < 1e-6
    torch.testing.assert_close(values, bounds.exact_log_marginal(model, batch), rtol=0, atol=1e-6)


def test_quadrature_on_square_equals_an_independent_grid_and_a_coarse_grid_is_not_trusted():
    from analysis.gaps import log_px
    from envs.toy_tasks import generate, make_task
    from world_models import quadrature
    task = make_task("square")
    data, _ = generate(task, 6, seed=7, dtype=torch.float64)
    values, rec = log_px(task.true_model, data, None, smc_n=100)
    assert rec["estimator"] == "exact (quadrature)" and rec["quadrature"]["trusted"]
    torch.testing.assert_close(values, grid_log_px(data.obs[..., 0]), rtol=0, atol=1e-6)
    coarse, rec = quadrature.log_marginal(task.true_model, data, points=11)
    assert not rec["trusted"] and rec["error"] > rec["tolerance"] and len(rec["tried"]) == 3
    # a grid too coarse at first is doubled until its check passes, and then agrees with the independent grid
    escalated, rec = quadrature.log_marginal(task.true_model, data, points=101)
    assert rec["trusted"] and [g["points"] for g in rec["tried"]] == [201, 401, 801]
    assert rec["tried"][0]["refine_error"] > rec["tolerance"]
    torch.testing.assert_close(escalated, grid_log_px(data.obs[..., 0]), rtol=0, atol=1e-6)


def test_quadrature_widens_a_grid_that_misses_posterior_mass():
    """A sequence whose posterior lies beyond the simulated range (an observation far out on `square`: z^2 = 200,
    |z| = 14 against L = 11.9): the widening check fails, L grows 1.5x (and G, as refining failed too), and the value
    then equals the independent grid on a range that holds that mass."""
    from envs.toy_tasks import generate, make_task
    from world_models import quadrature
    task = make_task("square")
    data, _ = generate(task, 3, seed=7, dtype=torch.float64)
    data.obs[0, 10] = 200.0
    values, rec = quadrature.log_marginal(task.true_model, data, points=401)
    assert rec["tried"][0]["widen_error"] > rec["tolerance"] and rec["trusted"]
    assert rec["half_width"] == 1.5 * rec["tried"][0]["half_width"]
    torch.testing.assert_close(values, grid_log_px(data.obs[..., 0], n=2001, bound=20.0), rtol=0, atol=1e-6)


def test_log_px_does_not_trust_ais_that_missed_a_mode():
    """On `square` the posterior has a mode for each sign of z. AIS started from a mean-field q on the positive
    mode (short chains) stays there and falls well below the exact log p(x); bootstrap SMC is significantly above
    it, so log_px must report (an independent rerun of) SMC, which is close to the exact value."""
    from analysis.gaps import log_px
    from envs.toy_tasks import generate, make_task
    from world_models.ais import AISSettings
    from world_models.posteriors.registry import Q_STAR
    torch.manual_seed(0)
    task = make_task("square")
    data, _ = generate(task, 24, seed=7, dtype=torch.float64)
    exact = grid_log_px(data.obs[..., 0])
    q = make_posterior(Q_STAR, task.true_model).double()
    mode = data.obs.clamp(min=1e-2).sqrt()                             # z = +sqrt(x): one sign only
    ctx = torch.cat([mode, torch.full_like(mode, math.log(0.3))], -1)
    values, record = log_px(task.true_model, data, None, smc_n=2000, exact=False, ais_from=("one mode", q, ctx),
                            ais_settings=AISSettings(steps=100, chains=4))
    ais_mean = record["mean_ais-100x4 (one mode)"]
    assert ais_mean < float(exact.mean()) - 1.0                         # AIS missed the other mode
    assert record["above_ais"] == ["smc-2000 (bootstrap)"] and record["estimator"] == "smc-2000 (bootstrap)"
    error = (values - exact).double()
    assert abs(float(error.mean())) < 3 * float(error.std() / len(error) ** 0.5) + 0.1


def test_toy_experiment_commits_each_finished_stage_and_nothing_on_a_resume_with_nothing_left(tmp_path, monkeypatch):
    import analysis.toy_experiment as toy
    made = []
    monkeypatch.setattr(toy, "commit", lambda paths, message, who: made.append((paths, message)) or True)
    monkeypatch.setattr(toy, "not_committable", lambda out: None)     # tmp_path stands for a tracked folder
    args = ["--task", "synthetic9", "--out", str(tmp_path), "--train-sequences", "16", "--test-sequences", "4",
            "--steps", "2", "--batch-size", "8", "--gap-sequences", "3", "--eval-samples", "4", "--encoder-steps", "1",
            "--q-star-max-steps", "2", "--q-star-samples", "1", "--curve-steps", "0", "--ais-steps", "0",
            "--posteriors", "amortized", "--seeds", "2", "--commit"]
    toy_main(args)
    assert [m for _, m in made] == ["toy experiment synthetic9: gaps at the true model (0 (method, seed) runs)",
                                    "toy experiment synthetic9: kalman seed 0 (1 (method, seed) runs)",
                                    "toy experiment synthetic9: kalman seed 1 (2 (method, seed) runs)",
                                    "toy experiment synthetic9: amortized seed 0 (3 (method, seed) runs)",
                                    "toy experiment synthetic9: amortized seed 1 (4 (method, seed) runs)"]
    paths = {p.name for p in made[-1][0]}
    assert {"results.json", "results.md", "gaps.png"} <= paths and not any(p.suffix == ".pt" for p in made[-1][0])
    assert "commit" not in json.loads((tmp_path / "results.json").read_text())["settings"]
    toy_main(args + ["--resume"])                                    # nothing left: nothing new to commit
    assert len(made) == 5
