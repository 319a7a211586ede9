"""A run is never destroyed or silently changed: bad input exits 2 with one line naming the flag or file and
touches nothing; resume refuses what would drop finished episodes or ignore a given flag; numerical failures
stop cleanly with the last good checkpoint kept."""
import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from agent.config import AgentConfig
from analysis import uncertainty, world_model_gaps
from envs.checks import Range
from planners.base import NonFiniteObjective, evaluate
from run_agent import main, make_config, next_episode_seconds, parse_args
from sweeps.execute import agent_command
from world_models.base import SequenceBatch
from world_models.training import NonFiniteLoss, gradient_step, make_adam, train

TINY = ["--env", "cartpole", "--seed-episodes", "1", "--train-steps", "2", "--batch-size", "3", "--seq-len", "8",
        "--deter", "16", "--stoch", "4", "--hidden", "16", "--horizon", "4", "--wandb", "disabled", "--no-progress",
        "--eval-episodes", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-episode run (one update episode), copied by each test that changes it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main(TINY + ["--episodes", "2", "--run-dir", str(run_dir)]) == 0
    return run_dir


def checksum(run_dir: Path) -> dict:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def set_checkpoint(run_dir: Path, **changes) -> None:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    torch.save({**state, **changes}, run_dir / "checkpoint.pt")


def edit_config(run_dir: Path, **changes) -> None:
    path = run_dir / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


NEW = "new"   # the case starts a new run in tmp/new (which must not appear); otherwise it resumes tmp/run
CASES = {
    # settings checked up front, naming the flag
    "horizon 0": (NEW, None, ["--horizon", "0"], "--horizon must be an integer in [1, 1000]; got 0"),
    "free nats nan": (NEW, None, ["--free-nats", "nan"], "--free-nats must be a finite number in [0, 1000]; got nan"),
    "refine lr nan": (NEW, None, ["--refine-lr", "nan"], "--refine-lr must be a finite number in (0, 100]; got nan"),
    "grad clip nan": (NEW, None, ["--grad-clip", "nan"], "--grad-clip must be a finite number > 0; got nan"),
    "grad clip -1": (NEW, None, ["--grad-clip", "-1"], "--grad-clip must be a finite number > 0; got -1.0"),
    "explore noise nan": (NEW, None, ["--explore-noise", "nan"], "--explore-noise must be a finite number in [0, 100]"),
    "explore noise inf": (NEW, None, ["--explore-noise", "inf"], "--explore-noise must be a finite number in [0, 100]"),
    "episodes 10**30": (NEW, None, ["--episodes", str(10**30)], "--episodes must be an integer in [1, 100000]"),
    "lr nan": (NEW, None, ["--lr", "nan"], "--lr must be a finite number in (0, 1]; got nan"),
    "lr 0": (NEW, None, ["--lr", "0"], "--lr must be a finite number in (0, 1]; got 0.0"),
    "seed too large for the env's seeds": (NEW, None, ["--seed", "5000"], "--seed must be an integer in [0, 998]"),
    "physics state 3": (NEW, None, ["--physics-state", "3"], "--physics-state must be 0 or 1; got 3"),
    "refine every 0th update": (NEW, None, ["--refine-every", "0"], "--refine-every must be an integer in [1, 100000]"),
    "minutes -1": (None, None, ["--minutes", "-1"], "--minutes must be >= 0, got -1.0"),
    "minutes nan": (None, None, ["--minutes", "nan"], "--minutes must be >= 0, got nan"),
    "unknown env names the flag": (NEW, None, ["--env", "pong"], "unknown --env 'pong'; valid choices: cartpole"),
    "run dir is a file": (NEW, lambda tmp: (tmp / "new").write_text("x"), [], "is a file, not a directory"),
    "run dir under a file": (NEW, lambda tmp: (tmp / "file").write_text("x"), ["--run-dir", "{tmp}/file/new"],
                             "cannot create run directory"),
    "run dir under an unwritable path": (NEW, None, ["--run-dir", "/proc/agap-test/new"], "cannot create run directory"),
    # resume: flags that conflict with the stored run, and runs that cannot be continued exactly
    "resume with another env": (None, None, ["--env", "cartpole_balance"],
                                "--env cartpole_balance was given, the run has cartpole"),
    "resume with another lr": (None, None, ["--lr", "0.5"], "--lr 0.5 was given, the run has 0.001"),
    "resume with a profile": (None, None, ["--profile", "v1"], "--profile v1 sets a new run's defaults"),
    "resume with fewer episodes": (None, None, ["--episodes", "1"], "--episodes 1 is fewer than the 2"),
    "resume without checkpoint": (None, lambda tmp: (tmp / "run/checkpoint.pt").unlink(), [],
                                  "holds 2 episode files and 2 metrics lines but no checkpoint.pt"),
    "resume from an older checkpoint": (None, lambda tmp: set_checkpoint(tmp / "run", episode=0), [],
                                        "its checkpoint.pt is from episode 0: resuming would delete finished"),
    "resume from a truncated checkpoint": (
        None, lambda tmp: (tmp / "run/checkpoint.pt").write_bytes((tmp / "run/checkpoint.pt").read_bytes()[:999]),
        [], "checkpoint.pt is corrupt (truncated?)"),
    "config is a JSON list": (None, lambda tmp: (tmp / "run/config.json").write_text("[1, 2, 3]"), [],
                              "config.json is not a JSON object of settings"),
    "config is binary garbage": (None, lambda tmp: (tmp / "run/config.json").write_bytes(bytes(range(128, 256))), [],
                                 "cannot read run config"),
    "config does not match the checkpoint": (None, lambda tmp: edit_config(tmp / "run", deter=32), [],
                                             "checkpoint.pt does not match the run's config.json: model"),
    "config with a bad value": (None, lambda tmp: edit_config(tmp / "run", free_nats=-1), [],
                                "--free-nats must be a finite number in [0, 1000]; got -1"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_in_one_line_and_touches_nothing(case, finished_run, tmp_path, capsys):
    new, prepare, argv, message = CASES[case]
    shutil.copytree(finished_run, tmp_path / "run")
    if prepare:
        prepare(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in argv]
    before, listing = checksum(tmp_path / "run"), sorted(p.name for p in tmp_path.iterdir())
    if new:
        argv = TINY + ["--episodes", "2", "--run-dir", str(tmp_path / "new")] + argv
    else:
        argv = ["--resume", "--run-dir", str(tmp_path / "run"), "--no-progress"] + argv
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert checksum(tmp_path / "run") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing      # no new run directory


@pytest.mark.parametrize("command", [world_model_gaps, uncertainty])
def test_analysis_of_a_run_whose_config_does_not_match_its_checkpoint(command, finished_run, tmp_path, capsys):
    shutil.copytree(finished_run, tmp_path / "run")
    edit_config(tmp_path / "run", hidden=32)
    before = checksum(tmp_path / "run")
    assert command.main([str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint.pt does not match the run's config.json" in err and len(err.splitlines()) == 1
    assert checksum(tmp_path / "run") == before


def test_resume_without_checkpoint_keeps_every_file(finished_run, tmp_path, capsys):
    run_dir = shutil.copytree(finished_run, tmp_path / "run")
    (run_dir / "checkpoint.pt").unlink()
    before = checksum(run_dir)
    assert len([name for name in before if name.startswith("episodes/")]) == 2
    for _ in range(2):                        # asking twice changes nothing either
        assert main(["--resume", "--run-dir", str(run_dir), "--episodes", "4", "--no-progress"]) == 2
        assert checksum(run_dir) == before
    assert "Put back the run's last checkpoint.pt" in capsys.readouterr().err


def test_resume_applies_and_records_safe_changes_and_accepts_equal_flags(finished_run, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "run")
    (run_dir / ".checkpoint.pt-a1b2c3.tmp").write_bytes(b"half a checkpoint")   # a kill during the write
    assert main(["--resume", "--run-dir", str(run_dir), "--no-progress", "--episodes", "3",
                 "--lr", "0.001", "--deter", "16", "--env", "cartpole"]) == 0
    assert AgentConfig.load(run_dir / "config.json").episodes == 3
    log = [json.loads(line) for line in (run_dir / "resume_log.jsonl").read_text().splitlines()]
    assert log[-1]["from_episode"] == 2 and log[-1]["changed"] == {"episodes": [2, 3]}
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_minutes_stop_a_run_at_a_checkpoint_that_resume_continues(finished_run, tmp_path, capsys):
    """--minutes 0 trains nothing; where the next episode is expected to take longer than the minutes (the last one's
    seconds, here edited to 10^6) the run stops before it; with time enough it trains to the end."""
    run_dir = shutil.copytree(finished_run, tmp_path / "run")
    metrics = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    episodes = lambda: len(metrics.read_text().splitlines())
    resume = ["--resume", "--run-dir", str(run_dir), "--no-progress", "--episodes", "4"]
    assert main(resume + ["--minutes", "0"]) == 0 and episodes() == 2
    metrics.write_text("".join(json.dumps({**r, "train_seconds": 1e6}) + "\n" for r in rows))
    assert main(resume + ["--minutes", "30"]) == 0 and episodes() == 2
    out = capsys.readouterr().out
    assert "stopped at episode 2 of 4: another would end after --minutes 0;" in out
    assert "stopped at episode 2 of 4: another would end after --minutes 30; the checkpoint holds every episode so " \
        "far (continue with --resume --run-dir" in out
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(resume + ["--minutes", "30"]) == 0 and episodes() == 4
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["episode"] == 4


def test_the_next_episode_is_expected_to_take_the_last_ones_seconds_and_its_evaluations():
    """Training and collecting as the last episode; evaluation episodes (one at every 2nd, three at every 4th and
    after the last) at the last measured seconds per evaluation episode (6 / 3 = 2)."""
    cfg = AgentConfig(episodes=8, seed_episodes=1, eval_every=2, eval_episodes=3, eval_episodes_every=4)
    rows = [{"train_seconds": 1.0, "collect_seconds": 2.0}, {"train_seconds": 1.0, "collect_seconds": 2.0,
                                                             "eval_episodes": 1, "eval_seconds": 4.0}]
    assert next_episode_seconds([], cfg) == 0.0
    assert next_episode_seconds(rows[:1], cfg) == 3.0                    # episode 2: one evaluation, none measured
    assert next_episode_seconds(rows, cfg) == 3.0                         # episode 3: no evaluation
    rows += [{"train_seconds": 2.0, "collect_seconds": 3.0, "eval_episodes": 3, "eval_seconds": 6.0}]
    assert next_episode_seconds(rows, cfg) == 5.0 + 3 * 2.0               # episode 4: three evaluations


def test_a_new_run_checkpoints_before_its_first_episode(tmp_path):
    """So that a missing checkpoint beside episodes always means a lost one, never a kill in episode 1."""
    from agent.loop import Agent
    cfg, run_dir, _ = make_config(parse_args(TINY + ["--run-dir", str(tmp_path / "run")]))
    run_dir.mkdir()
    agent = Agent(cfg, run_dir)
    agent.restore()
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["episode"] == 0


def test_non_finite_parameters_stop_cleanly_keeping_the_checkpoint(finished_run, tmp_path, capsys):
    run_dir = shutil.copytree(finished_run, tmp_path / "run")
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    state["model"] = {k: v.clone().fill_(math.nan) if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, run_dir / "checkpoint.pt")
    before = checksum(run_dir)
    assert main(["--resume", "--run-dir", str(run_dir), "--episodes", "3", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "stopped in episode 3: non-finite loss nan at model update 1 of 2" in err
    assert "last good checkpoint, from episode 2" in err and len(err.strip().splitlines()) == 1
    after = checksum(run_dir)
    assert after["checkpoint.pt"] == before["checkpoint.pt"] and after["metrics.jsonl"] == before["metrics.jsonl"]


def test_a_finite_loss_with_a_non_finite_gradient_leaves_the_parameters():
    w = torch.nn.Parameter(torch.zeros(3))
    optimizer = make_adam([w], 1e-3, 1e-8)
    with pytest.raises(NonFiniteLoss, match="non-finite gradient norm inf .*at step 7"):
        gradient_step(torch.sqrt(w).sum(), [w], optimizer, 10.0, "step 7")      # d sqrt(w) / dw = inf at 0
    assert torch.equal(w.detach(), torch.zeros(3))


def test_training_told_to_skip_non_finite_steps_skips_only_those_and_goes_on():
    """A step with a non-finite gradient (sqrt at 0) on steps 2 and 3 of 6: with skip_nonfinite those two leave the
    parameters as they were and are recorded; the others step; without it, training stops at step 2."""
    w = torch.nn.Parameter(torch.ones(2))
    data = SequenceBatch(torch.zeros(4, 3, 1), torch.zeros(4, 3, 1), torch.ones(4, 3))
    calls = []

    def loss_fn(b):
        calls.append(len(calls))
        bad = len(calls) - 1 in (2, 3)
        return (torch.sqrt(w * 0).sum() if bad else 0.0) + (w ** 2).sum(), {}
    seen = []
    hist = train(loss_fn, [w], data, 6, 2, lr=0.1, progress=lambda step, m: seen.append(w.detach().clone()),
                 skip_nonfinite=True)
    assert [("skipped" in h) for h in hist] == [False, False, True, True, False, False]
    assert all(math.isnan(h["loss"]) for h in hist[2:4]) and "non-finite gradient norm nan" in hist[2]["skipped"]
    assert torch.equal(seen[1], seen[2]) and torch.equal(seen[2], seen[3])           # skipped: unchanged
    assert all(not torch.equal(a, b) for a, b in ((seen[0], seen[1]), (seen[3], seen[4]), (seen[4], seen[5])))
    calls.clear()
    with pytest.raises(NonFiniteLoss, match="at training step 2"):
        train(loss_fn, [w], data, 6, 2, lr=0.1)


def test_nan_returns_stop_planning_as_a_floating_point_error():
    with pytest.raises(NonFiniteObjective, match="NaN for 1 of 3 candidates") as e:
        evaluate(lambda a: torch.tensor([0.0, math.nan, 1.0]), torch.zeros(3, 2, 1))
    assert isinstance(e.value, FloatingPointError)


def test_ranges_admit_only_finite_numbers_of_their_kind():
    r = Range(int, 1, 10)
    assert r.admits(1) and r.admits(10) and not r.admits(0) and not r.admits(11)
    assert not r.admits(2.0) and not r.admits(True) and not r.admits("3") and not r.admits(None)
    f = Range(float, 0, 1, low_open=True, high_open=True, optional=True)
    assert f.admits(0.5) and f.admits(None) and not f.admits(0.0) and not f.admits(1.0)
    assert not f.admits(math.nan) and not f.admits(math.inf)
    assert f.describe() == "a finite number in (0, 1)" and Range(float, 0).describe() == "a finite number >= 0"


def test_sweep_command_lines_parse_back_to_the_same_config(tmp_path):
    cfg = AgentConfig(physics_state=False, lr=0.01, horizon=5, missing_prob=0.5, seed=3)
    argv = agent_command(cfg, tmp_path / "run", resume=False, threads=1, wandb_group="g")[2:]
    assert make_config(parse_args(argv))[0] == cfg


def test_profiles_set_defaults_that_given_settings_override(tmp_path, capsys):
    from agent.config import PROFILES, AgentConfig, profile_config
    cfg, _, _ = make_config(parse_args(["--profile", "v1", "--train-steps", "7", "--run-dir", str(tmp_path / "a")]))
    assert (cfg.planner, cfg.planner_preset, cfg.train_steps) == ("cem", "cpu", 7)
    assert all(getattr(cfg, k) == v for k, v in PROFILES["v1"].items() if k != "train_steps")
    cfg, _, _ = make_config(parse_args(["--run-dir", str(tmp_path / "b")]))
    assert cfg == AgentConfig()
    cfg, _, _ = make_config(parse_args(["--profile", "fast", "--inference", "semi_amortized", "--run-dir",
                                        str(tmp_path / "c")]))
    assert (cfg.train_steps, cfg.planner, cfg.planner_preset, cfg.inference) == (50, "icem", "small", "semi_amortized")
    with pytest.raises(ValueError, match="unknown --profile 'v0'; valid choices: default, v1, fast"):
        profile_config("v0")
    with pytest.raises(SystemExit) as e:
        parse_args(["--profile", "v0"])
    assert e.value.code == 2 and "invalid choice: 'v0'" in capsys.readouterr().err


def test_a_config_from_before_a_setting_existed_keeps_what_the_run_did(tmp_path):
    """A run config written before --eval-episodes and --obs-std existed loads with what the run did (one evaluation
    episode, the observation std fixed at 1), not with today's defaults; docs/agent's oldest configs are such."""
    from dataclasses import asdict

    from agent.config import AgentConfig
    data = asdict(AgentConfig())
    del data["eval_episodes"], data["obs_std"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    old = AgentConfig.load(tmp_path / "config.json")
    assert (old.eval_episodes, old.obs_std) == (1, 1.0) and (AgentConfig().eval_episodes, AgentConfig().obs_std) == (10, 0)
    docs = Path(__file__).resolve().parents[1] / "docs" / "agent"
    assert AgentConfig.load(docs / "default-amortized-s0.config.json").obs_std == 1.0


def test_a_per_sequence_run_resumes_and_loads_with_its_grown_store(tmp_path):
    """per_sequence keeps lambda for every stored sequence in a buffer that grows during training: a checkpoint's
    store is larger than a fresh posterior's, and resuming and the analyses must take it, not refuse the run."""
    from analysis.run_loading import load_run
    run_dir = tmp_path / "run"
    assert main(TINY + ["--inference", "per_sequence", "--episodes", "2", "--action-repeat", "50",
                        "--run-dir", str(run_dir)]) == 0
    store = torch.load(run_dir / "checkpoint.pt", weights_only=False)["posterior"]["store"]
    assert store.shape[0] > 0 and not store.isnan().all()           # grown and written during training
    torch.testing.assert_close(load_run(run_dir).posterior.store, store, equal_nan=True, rtol=0, atol=0)
    assert main(["--resume", "--run-dir", str(run_dir), "--episodes", "3", "--no-progress"]) == 0
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["episode"] == 3


def test_training_with_cosine_decay_takes_steps_of_the_cosine_size():
    """On a loss with a constant gradient Adam's step is its step size (up to eps = 1e-4 against a gradient of 1):
    with cosine_decay step t of T moves the parameter by lr (1 + cos(pi t / T)) / 2, without it by lr."""
    data = SequenceBatch(torch.zeros(4, 3, 1), torch.zeros(4, 3, 1), torch.ones(4, 3))
    T, lr = 8, 0.1
    for decay, sizes in ((True, [lr * (1 + math.cos(math.pi * t / T)) / 2 for t in range(T)]), (False, [lr] * T)):
        w = torch.nn.Parameter(torch.zeros(1))
        seen = [0.0]
        train(lambda b: (w.sum(), {}), [w], data, T, 2, lr=lr, progress=lambda step, m: seen.append(float(w.detach())),
              cosine_decay=decay)
        steps = [a - b for a, b in zip(seen, seen[1:])]
        assert steps == pytest.approx(sizes, rel=1e-3)
