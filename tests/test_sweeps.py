"""The sweep launcher: grid expansion and naming, bad input, and real sweeps on a local Ray instance."""
import contextlib
import io
import json
import shutil

import pytest
import ray

from agent.config import AgentConfig
from sweeps.grid import SweepError, expand, parse_assignments, parse_value, run_name
from sweeps.launch import main

SETTINGS = ["seed_episodes=1", "train_steps=1", "batch_size=2", "seq_len=4", "deter=8", "stoch=4", "hidden=8",
            "horizon=2", "eval_every=2", "action_repeat=50", "eval_episodes=1"]     # a run takes a few seconds


def tiny(episodes: int = 2) -> list[str]:
    return ["--env", "cartpole", "--inference", "amortized", "--wandb", "disabled", "--max-concurrent", "2"] + [
        a for setting in SETTINGS + [f"episodes={episodes}"] for a in ("--set", setting)]


NAMES = ["cartpole-amortized-s0", "cartpole-amortized-s1"]
BROKEN = "cartpole-amortized-s2"


def lines(path):
    return path.read_text().splitlines()


def summary(out):
    return {r["name"]: r for r in json.loads((out / "sweep_summary.json").read_text())["runs"]}


# --- grid and names -----------------------------------------------------------------------------------
def test_values_are_parsed_with_the_fields_type():
    assert parse_value("missing_every", "2") == 2 and parse_value("missing_every", "none") is None
    assert parse_value("lr", "1e-3") == 0.001 and parse_value("planner", "random_shooting") == "random_shooting"
    assert parse_value("physics_state", "0") is False and parse_value("physics_state", "true") is True
    assert parse_assignments(["missing_every=none,2", "lr=0.1"], "--grid", multiple=True) == {
        "missing_every": [None, 2], "lr": [0.1]}
    for key, text, message in [("episodes", "none", "episodes cannot be none"),
                               ("episodes", "2.5", "bad value '2.5' for episodes: expected int"),
                               ("seed", "1", "use --seeds"), ("batch", "2", "unknown setting 'batch'; valid settings: obs")]:
        with pytest.raises(SweepError, match=message):
            parse_value(key, text)


def test_grid_expands_to_one_validated_config_per_run_with_unique_names():
    specs = expand(["cartpole"], ["amortized", "semi_amortized"], [0, 1], {"missing_every": [None, 2], "lr": [0.1]},
                   {"episodes": 3})
    assert len(specs) == 8 and len({s.name for s in specs}) == 8
    assert specs[0].name == "cartpole-amortized-lr0.1-missing_everynone-s0"     # grid keys sorted
    assert specs[3].name == "cartpole-amortized-lr0.1-missing_every2-s1"
    assert specs[3].config == AgentConfig(env="cartpole", inference="amortized", seed=1, missing_every=2, lr=0.1,
                                          episodes=3)
    assert run_name("Pendulum-v1", "amortized", {"planner": "a/b c"}, 2) == "Pendulum-v1-amortized-plannera_b_c-s2"
    with pytest.raises(SweepError, match=r"run cartpole-amortized-s0: --episodes must be an integer in \[1, 100000\]"):
        expand(["cartpole"], ["amortized"], [0], {}, {"episodes": 0})
    with pytest.raises(SweepError, match="share the run directory cartpole-amortized-s0"):
        expand(["cartpole"], ["amortized"], [0, 0], {}, {})
    with pytest.raises(SweepError, match="lr given both in --grid and --set"):
        expand(["cartpole"], ["amortized"], [0], {"lr": [0.1]}, {"lr": 0.2})


@pytest.mark.parametrize("argv, message", [
    (["--grid", "missing_evry=none,2"], "unknown setting 'missing_evry'; valid settings: obs, episodes"),
    (["--grid", "missing_every=none,two"], "bad value 'two' for missing_every: expected int or none"),
    (["--set", "episodes=-1"], "--episodes must be an integer in [1, 100000]; got -1"),
    (["--inference", "magic"], "unknown --inference 'magic'; valid choices: amortized"),
    (["--set", "physics_state=2"], "bad value '2' for physics_state: expected 0 or 1"),
    (["--set", "lr=0.1", "--set", "lr=0.2"], "--set lr is given twice"),
])
def test_bad_input_exits_2_naming_the_problem_and_creates_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    assert main(["--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_dry_run_plans_new_resume_skip_and_conflict_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    requested = expand(["cartpole"], ["amortized"], [0, 1, 2, 3, 4], {}, {"episodes": 2, "wandb": "disabled"})
    finished, interrupted, other, empty = (out / s.name for s in requested[:4])
    for run_dir, spec, rows in [(finished, requested[0], 2), (interrupted, requested[1], 1)]:
        run_dir.mkdir(parents=True)
        spec.config.save(run_dir / "config.json")
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"episode": i + 1}) + "\n" for i in range(rows)))
    other.mkdir()
    AgentConfig(seed=2, episodes=2, batch_size=5, wandb="disabled").save(other / "config.json")
    empty.mkdir()
    assert main(["--out", str(out), "--seeds", "0", "1", "2", "3", "4", "--set", "episodes=2", "--wandb", "disabled",
                 "--dry-run"]) == 0
    plan = dict(line.split(": ", 1) for line in lines_of(capsys.readouterr().out))
    assert plan["cartpole-amortized-s0"] == "skip" and plan["cartpole-amortized-s1"] == "resume"
    assert plan["cartpole-amortized-s2"].startswith("conflict: the existing run has other settings: batch_size "
                                                    "(stored 5, requested 32)")
    assert plan["cartpole-amortized-s3"] == "new" and plan["cartpole-amortized-s4"] == "new"
    assert main(["--out", str(out), "--seeds", "0", "--set", "episodes=3", "--wandb", "disabled", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "cartpole-amortized-s0: resume"     # more episodes: extend it
    assert sorted(p.name for p in out.iterdir()) == [s.name for s in requested[:4]]  # nothing written


def lines_of(text):
    return text.strip().splitlines()


def test_help_explains_with_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "python -m sweeps.launch --out runs/study --env cartpole" in text and "--grid KEY=V1,V2,..." in text


# --- real sweeps on a local Ray instance ---------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def first_sweep(local_ray, tmp_path_factory):
    """Seed 0 new; seed 1 new with the log of an earlier failed launch in its run directory; seed 2 an
    interrupted run whose checkpoint is corrupt, so that resuming it fails."""
    out = tmp_path_factory.mktemp("sweeps") / "study"
    (out / NAMES[1]).mkdir(parents=True)
    (out / NAMES[1] / "log.txt").write_text("an earlier launch\n")
    broken = out / BROKEN
    broken.mkdir(parents=True)
    fixed = parse_assignments(SETTINGS, "--set", multiple=False)
    expand(["cartpole"], ["amortized"], [2], {}, {**fixed, "episodes": 2, "wandb": "disabled"})[0].config.save(
        broken / "config.json")
    (broken / "checkpoint.pt").write_bytes(b"garbage")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["--out", str(out), "--seeds", "0", "1", "2"] + tiny())
    return out, code, stdout.getvalue(), stderr.getvalue()


def test_sweep_finishes_runs_and_reports_a_failed_one_with_its_log(first_sweep):
    out, code, stdout, stderr = first_sweep
    assert code == 1
    assert f"{BROKEN} failed: exit code 2; last lines of {out / BROKEN / 'log.txt'}" in stderr
    assert "checkpoint.pt is corrupt (truncated?)" in stderr and f"{BROKEN}  failed" in stdout
    runs = summary(out)
    for name in NAMES:
        assert runs[name]["status"] == "finished" and runs[name]["final_eval_return"] is not None
        assert len(lines(out / name / "metrics.jsonl")) == 2
        assert any(line.startswith("$ ") and "--wandb-group study" in line for line in lines(out / name / "log.txt"))
    assert lines(out / NAMES[1] / "log.txt")[0] == "an earlier launch"
    failed = runs[BROKEN]
    assert failed["status"] == "failed" and failed["exit_code"] == 2 and "checkpoint.pt is corrupt" in failed["log_tail"]
    assert (out / BROKEN / "checkpoint.pt").read_bytes() == b"garbage"       # its data untouched
    assert not (out / BROKEN / "metrics.jsonl").exists()


def test_relaunch_skips_finished_runs_and_launches_nothing(first_sweep, tmp_path, capsys):
    out = tmp_path / "study"
    shutil.copytree(first_sweep[0], out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "sweep_summary.json"}
    assert main(["--out", str(out), "--seeds", "0", "1"] + tiny()) == 0
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "sweep_summary.json"}
    assert after == before                                   # nothing launched: logs and metrics unchanged
    assert [summary(out)[n]["status"] for n in NAMES] == ["skipped", "skipped"]
    assert "cartpole-amortized-s1  skipped" in capsys.readouterr().out


def test_more_episodes_resume_a_finished_run(first_sweep, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(first_sweep[0], out)
    assert main(["--out", str(out), "--seeds", "0"] + tiny(episodes=3)) == 0
    assert summary(out)[NAMES[0]]["status"] == "resumed"
    assert [r["episode"] for r in map(json.loads, lines(out / NAMES[0] / "metrics.jsonl"))] == [1, 2, 3]


def test_settings_a_run_does_not_use_are_not_a_conflict():
    """refine_every changes only semi_amortized and iterative_amortized runs: an amortized run stored with another
    value is the same run (e.g. after its default changed); a semi_amortized one is not."""
    from sweeps.status import config_differences
    amortized = AgentConfig(inference="amortized", refine_every=1)
    assert config_differences(amortized, AgentConfig(inference="amortized", refine_every=5)) == []
    semi = AgentConfig(inference="semi_amortized", refine_every=1)
    assert config_differences(semi, AgentConfig(inference="semi_amortized", refine_every=5)) == [
        "refine_every (stored 1, requested 5)"]
    assert config_differences(amortized, AgentConfig(inference="semi_amortized", refine_every=5)) == [
        "inference (stored 'amortized', requested 'semi_amortized')", "refine_every (stored 1, requested 5)"]
