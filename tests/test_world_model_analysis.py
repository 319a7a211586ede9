"""The gap and uncertainty commands: exact answers on a linear-Gaussian model, and end to end on a tiny agent run."""
import json

import pytest
import torch

from analysis import uncertainty, world_model_gaps
from analysis.decompose import GapSettings, decompose
from run_agent import main as agent_main
from tests.conftest import lgssm_data, random_lgssm
from world_models import bounds
from world_models.posteriors import Objective, make_posterior
from world_models.training import train


def test_decomposition_with_estimated_log_px_reproduces_exact_gaps_on_lgssm():
    """On an LGSSM trained briefly with an amortized filter, the decomposition with log p(x) estimated by
    SMC / IWAE (as for world models) matches the one with the exact Kalman log p(x) within Monte Carlo error."""
    model = random_lgssm(21, z_dim=2, obs_dim=2)
    data = lgssm_data(model, 40, 10, seed=22)
    own = make_posterior("amortized", model, hidden=16).double()
    train(lambda b: own.training_loss(model, b, Objective()), list(model.parameters()) + list(own.parameters()),
          data, 30, 20, lr=1e-2)
    model.requires_grad_(False)
    sets = {"heldout": lgssm_data(model, 8, 10, seed=23)}
    settings = GapSettings(eval_samples=4000, encoder_steps=60, encoder_batch_size=20, q_star_max_steps=400,
                           q_star_samples=20, curve_steps=(0, 5), exact_log_px=False, ais_steps=500, bdmc_sequences=0)
    torch.manual_seed(0)
    est = decompose(model, "amortized", own, sets, data, settings, curve_split="heldout")["heldout"]
    exact = bounds.exact_log_marginal(model, sets["heldout"])
    assert not est["log_px_estimator"]["estimator"].startswith("exact")
    err = torch.tensor(est["values"]["log_px"]) - exact
    # AIS from the tightest q* (500 distributions x 16 chains) is the estimate: within 0.05 nats of the truth per
    # sequence on average (IWAE-4000 with these mean-field proposals scatters by about 0.3 nats per sequence)
    assert est["log_px_estimator"]["estimator"].startswith("ais-500x16")
    assert abs(float(err.mean())) < 0.05, err
    g = est["gaps"]
    exact_approximation = float((exact - torch.tensor(est["values"][f"q*[{est['tightest_q_star']}]"])).mean())
    # the Markov-Gaussian q* contains the exact posterior: the tightest, with an approximation gap of about 0
    assert est["tightest_q_star"] == "markov" and abs(exact_approximation) < 0.05   # per sequence (measured 0.007)
    # the estimated approximation gap differs from the exact one by exactly the log p(x) error bounded above
    assert abs(g["approximation"]["mean"] - exact_approximation - float(err.mean())) < 1e-5   # float32 sums
    assert abs(g["inference"]["mean"] - g["approximation[own]"]["mean"] - g["amortization"]["mean"]) < 1e-9
    assert exact_approximation > -0.05 and g["amortization"]["mean"] > -0.05   # bounds in their order, up to MC error
    assert [row["K"] for row in est["refinement_curve"]] == [0, 5]


TINY = ["--env", "cartpole", "--seed-episodes", "1", "--train-steps", "2", "--batch-size", "3", "--seq-len", "8",
        "--deter", "16", "--stoch", "4", "--hidden", "16", "--horizon", "4", "--wandb", "disabled", "--no-progress",
        "--action-repeat", "50", "--episodes", "2",
        "--eval-episodes", "1"]


# a gap analysis of held-out windows small enough for a test: what is checked is exact (bookkeeping, numbers equal
# across calls), not the size of any gap
SMALL = ["--splits", "heldout", "--heldout-episodes", "2", "--sequences", "4", "--length", "10", "--encoder-windows",
         "20", "--eval-samples", "50", "--q-star-max-steps", "20", "--encoder-steps", "10", "--curve-steps", "0", "2",
         "--ais-steps", "10", "--ais-chains", "4", "--bdmc-sequences", "2"]


@pytest.fixture(scope="module", params=["semi_amortized", "iterative_amortized", "per_sequence"])
def tiny_run(tmp_path_factory, request):
    run_dir = tmp_path_factory.mktemp("run")
    assert agent_main(TINY + ["--inference", request.param, "--run-dir", str(run_dir)]) == 0
    return run_dir


def _snapshot(run_dir):
    return {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*")
            if "analysis" not in p.relative_to(run_dir).parts}


def test_gap_command_on_a_tiny_run(tiny_run):
    before = _snapshot(tiny_run)
    assert world_model_gaps.main([str(tiny_run), "--heldout-episodes", "2", "--sequences", "4", "--length", "10",
                                  "--encoder-windows", "20", "--eval-samples", "50", "--q-star-max-steps", "100",
                                  "--encoder-steps", "10", "--curve-steps", "0", "2", "--ais-steps", "20",
                                  "--ais-chains", "4", "--bdmc-sequences", "2"]) == 0
    out = tiny_run / "analysis"
    r = json.loads((out / "gaps.json").read_text())
    amortized = r["inference"] != "per_sequence"     # per_sequence's own posterior is q* itself: no gap of its own
    for split in ("heldout", "train"):
        g = r[split]["gaps"]
        assert {"approximation", "conditioning", "inference[filter]", "amortization[smoother]"} <= set(g)
        assert ({"inference", "amortization"} <= set(g)) == amortized
        if amortized:
            assert abs(g["inference"]["mean"] - g["approximation[own]"]["mean"] - g["amortization"]["mean"]) < 1e-6
        assert g["approximation"]["mean"] <= min(v["mean"] for k, v in g.items() if k.startswith("approximation["))
        assert r[split]["failures"] == []
        assert set(r[split]["q_star"]) == {"filter", "smoother", "mean-field"} | ({"own"} if amortized else set())
    assert [row["K"] for row in r["heldout"]["refinement_curve"]] == [0, 2]
    assert any(k.startswith("mean_ais-20x4") for k in r["heldout"]["log_px_estimator"])
    b = r["bdmc"]
    assert b["sequences"] == 2 and b["width"]["mean"] == pytest.approx(b["upper"]["mean"] - b["lower"]["mean"])
    assert "BDMC sandwich" in (out / "gaps.md").read_text()
    described = {"semi_amortized": "refinement steps", "iterative_amortized": "iterations of its learned update",
                 "per_sequence": "per-sequence optimization"}
    assert described[r["inference"]] in r["heldout"]["own_posterior"] and r["heldout"]["own_posterior"] in (
        out / "gaps.md").read_text()
    assert all((out / name).stat().st_size > 0 for name in ("gaps.md", "gaps.png", "refinement.png"))
    assert len(list((out / "heldout-eval-ep2").glob("episode_*.npz"))) == 2
    assert _snapshot(tiny_run) == before                  # the run itself is untouched

    # --splits heldout: the decomposition of held-out windows only, everything else alike
    one = tiny_run / "one-split"
    # SMALL starts with --splits heldout: given twice here, the split is decomposed once
    assert world_model_gaps.main([str(tiny_run), "--out", str(one)] + SMALL[:2] + ["heldout"] + SMALL[2:]
                                 + ["--bdmc-sequences", "0"]) == 0
    r = json.loads((one / "gaps.json").read_text())
    assert r["splits"] == ["heldout"] and "train" not in r and r["heldout"]["refinement_curve"]
    md = (one / "gaps.md").read_text()
    assert "on heldout sequences" in md and "on train sequences" not in md


def test_uncertainty_command_on_a_tiny_run(tiny_run):
    assert uncertainty.main([str(tiny_run), "--heldout-episodes", "2", "--horizon", "4", "--samples", "8",
                             "--readout-windows", "10"]) == 0
    r = json.loads((tiny_run / "analysis" / "uncertainty.json").read_text())
    assert set(r["summary"]) == {"obs", "reward", "state"}
    for s in r["summary"].values():
        assert 0 <= s["coverage50"] <= s["coverage90"] <= 1 and s["crps"] > 0
    assert len(r["per_horizon"]["obs"]["nll"]) == 4
    assert (tiny_run / "analysis" / "calibration.png").stat().st_size > 0


def test_uncertainty_leaves_horizons_without_observations_unscored(tmp_path):
    """With every 2nd observation missing, open-loop horizons that land on missing steps have no observation
    score (None), not a score of 0; rewards are scored at every horizon."""
    run_dir = tmp_path / "run"
    assert agent_main(TINY + ["--inference", "amortized", "--missing-every", "2", "--run-dir", str(run_dir)]) == 0
    assert uncertainty.main([str(run_dir), "--heldout-episodes", "2", "--horizon", "4", "--samples", "4",
                             "--readout-windows", "10", "--starts", "2"]) == 0
    r = json.loads((run_dir / "analysis" / "uncertainty.json").read_text())
    obs, reward = r["per_horizon"]["obs"]["nll"], r["per_horizon"]["reward"]["nll"]
    assert obs[0] is None and obs[2] is None and None not in (obs[1], obs[3])     # steps 3, 5 missing; 4, 6 seen
    assert None not in reward
    assert "first scored k" in (run_dir / "analysis" / "uncertainty.md").read_text()


def test_analysis_commands_reject_a_missing_run(tmp_path, capsys):
    assert world_model_gaps.main([str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert uncertainty.main([str(tmp_path / "nothing")]) == 2


def test_gap_command_gives_the_same_numbers_with_two_workers(tiny_run, tmp_path):
    """--workers 2 runs the encoder fits, q* fits, log p(x) estimators and the BDMC sandwich in two processes,
    each piece seeded from its name: every number in gaps.json is the one --workers 1 computes."""
    results = {}
    for workers in (1, 2):
        out = tmp_path / f"workers{workers}"
        assert world_model_gaps.main([str(tiny_run), "--out", str(out), "--workers", str(workers)] + SMALL) == 0
        results[workers] = json.loads((out / "gaps.json").read_text())
    one, two = results[1]["heldout"], results[2]["heldout"]
    assert one["values"] == two["values"] and one["gaps"] == two["gaps"]      # every ELBO, log p(x), gap: exactly
    assert one["log_px_estimator"]["estimator"] == two["log_px_estimator"]["estimator"]
    assert {k: v["elbo_per_step"] for k, v in one["q_star"].items()} == {
        k: v["elbo_per_step"] for k, v in two["q_star"].items()}
    assert results[1]["bdmc"]["width"] == results[2]["bdmc"]["width"]
    assert results[2]["core_seconds"] > 0 and "2 worker processes" in (tmp_path / "workers2" / "gaps.md").read_text()


@pytest.mark.parametrize("tiny_run", ["semi_amortized"], indirect=True)     # own encoder: every kind of piece
def test_a_killed_gap_analysis_resumes_from_its_pieces_with_the_same_numbers(tiny_run, tmp_path):
    """Each finished piece is kept in OUT/gaps-pieces/ until gaps.json is written: a call that stopped part way (here:
    run() in 2 workers without write(), then some pieces deleted, as a kill leaves them) resumes from the pieces that
    are there and writes every number the call that ran through wrote (the store's key: tests/test_workers.py)."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert world_model_gaps.main([str(tiny_run), "--out", str(whole)] + SMALL) == 0
    assert not (whole / world_model_gaps.PIECES).exists()       # removed once gaps.json is written
    ran = json.loads((whole / "gaps.json").read_text())
    assert ran["resumed_pieces"] == {}

    world_model_gaps.run(world_model_gaps.parse_args([str(tiny_run), "--out", str(killed), "--workers", "2"] + SMALL))
    pieces = killed / world_model_gaps.PIECES
    stored = sorted(pieces.glob("*.pt"))
    assert len(stored) >= 6                     # fits, q*s, log p(x) estimators, BDMC
    lost = [p for p in stored if "ais" in p.name or "bdmc" in p.name or "mean-field" in p.name]
    assert lost
    for p in lost:                              # a kill before these finished
        p.unlink()
        p.with_suffix(".json").unlink()
    assert world_model_gaps.main([str(tiny_run), "--out", str(killed)] + SMALL) == 0
    resumed = json.loads((killed / "gaps.json").read_text())
    assert len(resumed["resumed_pieces"]) == len(stored) - len(lost)
    assert all(v["core_seconds"] > 0 for v in resumed["resumed_pieces"].values())
    assert resumed["heldout"]["values"] == ran["heldout"]["values"]       # every ELBO and log p(x), bit for bit
    assert resumed["heldout"]["gaps"] == ran["heldout"]["gaps"]
    assert resumed["bdmc"]["width"] == ran["bdmc"]["width"]
    assert "pieces resumed from an earlier call" in (killed / "gaps.md").read_text()
    assert not pieces.exists()
