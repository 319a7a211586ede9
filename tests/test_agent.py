"""The agent loop really runs: every inference type on a dm_control task, pixels, resume, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.config import AgentConfig
from agent.loop import Agent
from agent.replay import Replay
from run_agent import main
from world_models.posteriors import POSTERIORS

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--env", "cartpole", "--seed-episodes", "1", "--train-steps", "2", "--batch-size", "3", "--seq-len", "8",
        "--deter", "16", "--stoch", "4", "--hidden", "16", "--horizon", "4", "--wandb", "disabled", "--no-progress",
        "--eval-episodes", "1"]


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("inference", POSTERIORS)
def test_two_episodes_for_every_inference_type_with_its_defaults(tmp_path, inference):
    assert main(TINY + ["--inference", inference, "--episodes", "2", "--run-dir", str(tmp_path)]) == 0
    rows = metrics(tmp_path)
    assert [r["episode"] for r in rows] == [1, 2]
    assert rows[1]["env_steps"] == 2000 and np.isfinite(rows[1]["elbo"]) and "eval_return" in rows[1]
    assert rows[1]["plan_seconds"] > 0
    assert len(Replay(tmp_path / "episodes")) == 2
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "checkpoint.pt").exists()


def test_decision_time_refinement_runs(tmp_path):
    assert main(TINY + ["--inference", "semi_amortized", "--decision-refine-steps", "1", "--decision-window", "3",
                        "--episodes", "2", "--run-dir", str(tmp_path)]) == 0
    assert metrics(tmp_path)[1]["plan_seconds"] > 0


@pytest.mark.parametrize("inference, settings, expected", [
    ("per_sequence", {}, (20, 0.1)),                              # its own default: near the converged belief
    ("per_sequence", {"decision_refine_lr": 0.02, "decision_refine_steps": 4}, (4, 0.02)),
    ("semi_amortized", {"decision_refine_steps": 2, "refine_lr": 0.05}, (2, 0.05)),   # no default lr: --refine-lr
    ("amortized", {}, None)])
def test_decision_refinement_takes_the_posteriors_defaults_unless_given(tmp_path, inference, settings, expected):
    cfg = AgentConfig(inference=inference, deter=16, stoch=4, hidden=16, wandb="disabled", **settings)
    s = Agent(cfg, tmp_path).belief.refine_settings
    assert (None if s is None else (s.steps, s.lr)) == expected


def test_pixels_run(tmp_path):
    assert main(TINY + ["--obs", "pixels", "--episodes", "2", "--action-repeat", "50", "--run-dir", str(tmp_path)]) == 0
    ep = Replay(tmp_path / "episodes").episodes[0]
    assert ep["obs"].dtype == np.uint8 and ep["obs"].shape[1:] == (3, 64, 64)
    stored = sorted((tmp_path / "episodes").glob("*.npz"))[0].stat().st_size   # compressed pixel episodes
    assert stored < 0.5 * sum(a.nbytes for a in ep.values())
    rows = metrics(tmp_path)
    assert len(rows) == 2 and np.isfinite(rows[-1]["open_loop_mse"])
    assert (tmp_path / "eval_video.gif").stat().st_size > 1000


@pytest.mark.parametrize("inference", [["amortized"], ["semi_amortized", "--refine-every", "3"]])
def test_same_seed_same_returns_and_resume_continues_exactly(tmp_path, inference):
    """semi_amortized refining on the 1st, 4th, ... update after each episode (2 per episode here): a resumed run
    refines at the same updates as an uninterrupted one."""
    a, b = tmp_path / "a", tmp_path / "b"
    args = TINY + ["--inference", *inference, "--eval-every", "2"]
    assert main(args + ["--episodes", "3", "--run-dir", str(a)]) == 0
    assert main(args + ["--episodes", "2", "--run-dir", str(b)]) == 0
    assert main(["--resume", "--run-dir", str(b), "--episodes", "3", "--no-progress"]) == 0
    ra, rb = metrics(a), metrics(b)
    assert [r["train_return"] for r in ra] == [r["train_return"] for r in rb]
    assert ra[-1]["eval_return"] == rb[-1]["eval_return"] and ra[-1]["loss"] == rb[-1]["loss"]
    if inference[0] == "semi_amortized":
        assert [r["refined"] for r in ra[1:]] == [r["refined"] for r in rb[1:]] == [0.5, 0.5]


def test_sigkill_then_resume_counts_every_episode_once(tmp_path):
    cmd = [sys.executable, str(ROOT / "run_agent.py")] + TINY + ["--episodes", "4", "--run-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists() or \
            len((tmp_path / "metrics.jsonl").read_text().splitlines()) < 2:
        time.sleep(0.05)
        assert time.time() < deadline, "the run produced no episodes"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(["--resume", "--run-dir", str(tmp_path), "--no-progress"]) == 0
    rows = metrics(tmp_path)
    assert [r["episode"] for r in rows] == [1, 2, 3, 4]
    assert len(Replay(tmp_path / "episodes")) == 4
    assert rows[-1]["env_steps"] == 4000


@pytest.mark.parametrize("argv, message", [
    (["--env", "pong"], "unknown --env 'pong'; valid choices: cartpole"),
    (["--inference", "magic"], "unknown --inference 'magic'; valid choices: amortized"),
    (["--episodes", "-1"], "--episodes must be an integer in [1, 100000]; got -1"),
    (["--missing-prob", "1.5"], "--missing-prob must be a finite number in [0, 1); got 1.5"),
    (["--obs", "rgb"], "unknown --obs 'rgb'; valid choices: state, pixels"),
    (["--inference", "amortized", "--decision-refine-steps", "2"], "(--decision-refine-steps) needs a posterior"),
    (["--inference", "per_sequence", "--decision-refine-lr", "0"], "--decision-refine-lr must be"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, argv, message):
    run_dir = tmp_path / "run"
    assert main(TINY + argv + ["--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not run_dir.exists()


def test_resume_errors_touch_nothing(tmp_path, capsys):
    assert main(["--resume", "--run-dir", str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    assert main(TINY + ["--episodes", "1", "--run-dir", str(run_dir)]) == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "wandb" not in p.parts}
    assert main(TINY + ["--episodes", "1", "--run-dir", str(run_dir)]) == 2      # exists: needs --resume
    assert "already holds a run" in capsys.readouterr().err
    (run_dir / "checkpoint.pt").write_bytes(b"garbage")
    before[run_dir / "checkpoint.pt"] = b"garbage"
    assert main(["--resume", "--run-dir", str(run_dir), "--episodes", "2"]) == 2
    assert "checkpoint.pt is corrupt (truncated?)" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "wandb" not in p.parts}
    assert after == before


def test_several_evaluation_episodes_after_the_last(tmp_path):
    """--eval-episodes 3: after the last episode, three evaluation episodes on distinct env seeds; eval_return is
    their mean, eval_return_se its standard error."""
    assert main(TINY + ["--eval-episodes", "3", "--episodes", "2", "--action-repeat", "50",
                        "--run-dir", str(tmp_path)]) == 0
    rows = metrics(tmp_path)
    assert "eval_return" not in rows[0]
    last = rows[1]
    assert last["eval_episodes"] == 3 and len(last["eval_returns"]) == 3 and len(set(last["eval_returns"])) == 3
    assert last["eval_return"] == pytest.approx(np.mean(last["eval_returns"]))
    assert last["eval_return_se"] == pytest.approx(np.std(last["eval_returns"], ddof=1) / np.sqrt(3))
