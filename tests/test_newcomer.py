"""What a newcomer meets first: short env names, a warning when a run would train nothing, flags named in
errors, and an ETA that holds from the first update episodes on."""
import json
from pathlib import Path

import pytest

from agent.config import AgentConfig, profile_config
from agent.progress import RunETA, duration
from run_agent import main, parse_args

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--seed-episodes", "1", "--train-steps", "1", "--batch-size", "2", "--seq-len", "4", "--deter", "8",
        "--stoch", "4", "--hidden", "8", "--horizon", "2", "--wandb", "disabled", "--no-progress",
        "--eval-episodes", "1"]


def test_short_env_names_run_and_are_listed_in_help(tmp_path, capsys):
    assert AgentConfig(env="reacher").env == "reacher"
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for alias, task in (("reacher", "reacher_easy"), ("cheetah", "cheetah_run"), ("walker", "walker_walk"),
                        ("finger", "finger_spin"), ("cup", "cup_catch"), ("pendulum", "pendulum_swingup")):
        assert f"{alias} = {task}" in help_text
    assert "(default: None)" not in help_text and help_text.count("(default: the preset's, 12)") == 1
    assert main(TINY + ["--env", "pendulum", "--episodes", "2", "--action-repeat", "100",
                        "--run-dir", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["env"] == "pendulum"


def test_a_run_that_would_train_nothing_says_so(tmp_path, capsys):
    assert main(TINY + ["--episodes", "2", "--seed-episodes", "5", "--action-repeat", "100",
                        "--run-dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "warning: --episodes 2 <= --seed-episodes 5: the model is updated only after the seed episodes" in err
    assert AgentConfig(episodes=6, seed_episodes=5).warnings() == []
    assert "--refine-every 3 does nothing with --inference amortized" in AgentConfig(refine_every=3).warnings()[0]
    assert AgentConfig(refine_every=3, inference="semi_amortized").warnings() == []
    assert AgentConfig(refine_every=3, inference="iterative_amortized").warnings() == []
    assert AgentConfig().warnings() == [] == profile_config("v1").warnings()    # the defaults and v1's (1) are quiet


def test_errors_name_the_flag_the_user_typed(tmp_path, capsys):
    assert main(TINY + ["--decision-refine-steps", "2", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--decision-refine-steps" in err and "decision_refine_steps" not in err


def recorded(name: str) -> tuple[AgentConfig, list[dict]]:
    stem = ROOT / "docs" / "agent" / name
    cfg = AgentConfig.load(Path(f"{stem}.config.json"))     # as a resumed run reads it
    return cfg, [json.loads(line) for line in Path(f"{stem}.metrics.jsonl").read_text().splitlines()]


def seconds(record: dict) -> float:
    return record.get("train_seconds", 0.0) + record["collect_seconds"] + record.get("eval_seconds", 0.0)


@pytest.mark.parametrize("run", ["default-amortized-s0", "learnedstd-amortized-s0", "learnedstd-semi_amortized-s0"])
def test_eta_after_10_episodes_of_a_recorded_100_episode_run_is_within_20_percent(run):
    cfg, rows = recorded(run)
    assert len(rows) == cfg.episodes == 100
    eta = RunETA(cfg)
    for record in rows[:10]:
        eta.add(record)
    actual = sum(seconds(r) for r in rows[10:])
    assert abs(eta.remaining(10) - actual) < 0.2 * actual, (eta.remaining(10), actual)
    naive = sum(seconds(r) for r in rows[:10]) / 10 * 90      # what the average rate says: far too little
    assert naive < 0.8 * actual


def test_eta_prices_each_kind_of_episode():
    cfg = AgentConfig(episodes=30, seed_episodes=5, eval_every=10, eval_episodes=4, eval_episodes_every=20)
    assert [cfg.eval_episodes_after(e) for e in (5, 9, 10, 20, 25, 30)] == [0, 0, 1, 4, 0, 4]
    eta = RunETA(cfg)
    for e in range(1, 6):
        eta.add({"episode": e, "train_seconds": 0.0, "collect_seconds": 0.1})
    assert eta.remaining(5) is None                   # no update episode seen: nothing to price them with
    eta.add({"episode": 6, "train_seconds": 6.0, "collect_seconds": 4.0})
    assert eta.remaining(6) == pytest.approx(24 * 10.0 + 9 * 10.0)    # evaluation episodes: 1 after 10, 4 after 20, 30
    eta.add({"episode": 10, "train_seconds": 6.0, "collect_seconds": 4.0, "eval_seconds": 2.0})
    assert eta.remaining(10) == pytest.approx(20 * 10.0 + 8 * 2.0)
    eta.add({"episode": 20, "train_seconds": 6.0, "collect_seconds": 4.0, "eval_seconds": 12.0, "eval_episodes": 4})
    assert eta.remaining(20) == pytest.approx(10 * 10.0 + 4 * 2.5)    # mean per evaluation episode: (2 + 3) / 2
    assert duration(3725) == "1h02m" and duration(75) == "1m15s" and duration(None) == "?"
