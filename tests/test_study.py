import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean

from agent.config import AgentConfig
from sweeps.status import is_finished
from sweeps.launch import wait_for_runs
from sweeps.status import NEW, Plan
from analysis.world_model_gaps import PIECES
from sweeps.study import (ABLATION, ANALYSIS_CORE_HOURS, CORE_HOURS, FILL_HOURS, RunHours, admission,
                          copy_light_results, core_seconds,
                          drop_unsettled_gaps, hours_needed, hours_per_run, is_done, measured_core_hours, progress,
                          reanalysable, study_runs, commit_with_reports, wall_seconds, what_to_do, what_was_done)
from sweeps.study import main as study_main
from sweeps.summary import FINISHED, NOT_STARTED, record
from world_models.posteriors.registry import POSTERIORS

REPO = Path(__file__).resolve().parents[1]


def test_the_study_knows_its_60_runs():
    runs = study_runs()
    names = [r.spec.name for r in runs]
    assert len(names) == len(set(names)) == 60
    main = [r.spec.config for r in runs if r.part == "main"]
    assert len(main) == 50 and {c.inference for c in main} == set(POSTERIORS)
    assert {c.missing_prob for c in main} == {None, 0.5} and {c.seed for c in main} == set(range(5))
    assert all(c.episodes == 100 and c.free_nats == 3.0 and c.eval_episodes == 10 and c.eval_every == 10
               and c.eval_episodes_every == 50 and c.physics_state for c in main)
    ablation = [r.spec.config for r in runs if r.part == "ablation"]
    assert len(ablation) == 10 and {c.inference for c in ablation} == set(ABLATION[0])
    assert {(c.free_nats, c.missing_prob) for c in ablation} == {(0.0, None)}
    assert "cartpole-semi_amortized-missing_prob0.5-s4" in names and "cartpole-amortized-free_nats0.0-s0" in names
    # seed by seed: the first 12 runs are every group's seed 0 (10 main, then 2 ablation)
    assert [r.spec.config.seed for r in runs] == sorted(r.spec.config.seed for r in runs)
    assert [r.part for r in runs[:12]] == ["main"] * 10 + ["ablation"] * 2


def write_run(run_dir: Path, episodes: int, rows: int, analyses=("gaps", "uncertainty")) -> None:
    (run_dir / "analysis").mkdir(parents=True)
    AgentConfig(episodes=episodes).save(run_dir / "config.json")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"episode": e + 1}) + "\n" for e in range(rows)))
    (run_dir / "learning_curve.png").write_bytes(b"\x89PNG")
    for name in analyses:
        (run_dir / "analysis" / f"{name}.json").write_text("{}")
    (run_dir / "analysis" / "heldout_episodes.pt").write_bytes(b"not light")
    (run_dir / "checkpoint.pt").write_bytes(b"not light")


def test_a_run_is_done_only_with_all_episodes_and_both_analyses(tmp_path):
    write_run(tmp_path / "done", 3, 3)
    write_run(tmp_path / "short", 3, 2)
    write_run(tmp_path / "unanalysed", 3, 3, analyses=("gaps",))
    assert is_done(tmp_path / "done")
    assert not is_done(tmp_path / "short") and not is_done(tmp_path / "unanalysed")
    assert not is_done(tmp_path / "absent")


def test_only_light_results_are_copied_and_replace_an_old_copy(tmp_path):
    write_run(tmp_path / "run", 3, 3)
    results = tmp_path / "results" / "run"
    (results / "analysis").mkdir(parents=True)
    (results / "stale.txt").write_text("from an earlier copy")
    copy_light_results(tmp_path / "run", results)
    files = sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file())
    assert files == ["analysis/gaps.json", "analysis/uncertainty.json", "config.json", "learning_curve.png",
                     "metrics.jsonl"]
    assert is_done(results) and not (tmp_path / "results" / "run.tmp").exists()


def test_dry_run_counts_what_is_left_and_a_bad_pattern_is_an_error(tmp_path):
    results = tmp_path / "runs"
    write_run(results / "cartpole-amortized-missing_probnone-s0", 100, 100)
    (results / "cartpole-amortized-missing_probnone-s0" / "analysis" / "gaps.json").write_text(
        json.dumps({"settings": {"encoder_lr_schedule": "cosine"}}))       # settled: not trained again
    run = lambda *a: subprocess.run([sys.executable, "-m", "sweeps.study", "--results", str(results),
                                     "--work", str(tmp_path / "work"), *a], cwd=REPO, capture_output=True, text=True)
    out = run("--dry-run")
    assert out.returncode == 0, out.stderr
    assert "1 of 60 runs done; 59 to run" in out.stdout
    assert "cartpole-amortized-missing_probnone-s0: done" in out.stdout
    assert "cartpole-amortized-free_nats0.0-s1: new" in out.stdout
    out = run("--dry-run", "--only", "*-per_sequence-*")
    assert "0 of 10 runs done; 10 to run" in out.stdout
    out = run("--only", "nothing-like-this")
    assert out.returncode == 2 and "no run matches" in out.stderr and "cartpole-amortized" in out.stderr


def test_one_small_run_end_to_end_and_again(tmp_path):
    """study_task on a tiny run with missing observations (quick analyses): past train_by it starts nothing; with
    less time left than run_agent.py takes to start, the run stops at its first checkpoint, unanalysed; train only
    (--train-only), then it analyses and copies the light results without training again, and a third call trains
    and analyses nothing."""
    from sweeps.execute import agent_command
    from sweeps.study import study_task
    cfg = AgentConfig(episodes=3, seed_episodes=2, train_steps=2, batch_size=4, seq_len=8, deter=16, stoch=4, hidden=16,
                      eval_every=1, eval_episodes=2, eval_episodes_every=3, horizon=3, action_repeat=50,
                      missing_prob=0.5, wandb="disabled")
    work, results = tmp_path / "work" / "run", tmp_path / "results" / "run"
    # the flow under test, not the numbers: --quick analyses cut further (on held-out windows only)
    quick = {"gaps": ("world_model_gaps", ("--quick", "--splits", "heldout", "--encoder-steps", "10",
                                           "--q-star-max-steps", "20", "--ais-steps", "20", "--bdmc-sequences", "1")),
             "uncertainty": ("uncertainty", ("--quick",))}
    command = agent_command(cfg, work, False, 1, "test")
    assert study_task(command, str(work), str(results), 1, quick, train_by=time.time() - 1)[0] == 0
    assert not work.exists()
    assert study_task(command, str(work), str(results), 1, quick, train_by=time.time() + 0.5)[0] == 0
    assert not is_finished(work) and not (work / "analysis").exists() and not results.exists()
    assert "stopped at episode 0 of 3" in (work / "log.txt").read_text()      # starting up took the 0.5 s
    command = agent_command(cfg, work, True, 1, "test")                           # resumed from here on
    assert study_task(command, str(work), str(results), 1, None)[0] == 0          # --train-only: trains, copies nothing
    assert is_finished(work) and not (work / "analysis").exists() and not results.exists()
    trained = (work / "metrics.jsonl").read_text()
    assert study_task(command, str(work), str(results), 1, quick, analyses_by=time.time() - 1)[0] == 0
    assert not (work / "analysis").exists() and not results.exists()             # too late for the analyses
    assert study_task(command, str(work), str(results), 1, quick)[0] == 0
    assert (work / "metrics.jsonl").read_text() == trained                       # analysed, not trained again
    assert is_done(results) and not list(results.rglob("*.pt")) and not (results / "episodes").exists()
    assert (results / "analysis" / "gaps.md").exists() and (results / "analysis" / "calibration.png").exists()
    log = (work / "log.txt").read_text()
    assert study_task(command, str(work), str(results), 1, quick)[0] == 0
    assert (work / "log.txt").read_text() == log           # nothing ran the second time


def test_what_is_left_uses_the_measured_hours_of_done_runs_and_what_a_checkpoint_holds(tmp_path, capsys):
    """--dry-run's and --hours' estimates: a posterior with done runs costs their mean measured hours per run, the
    others CORE_HOURS; a run that is not done is not measured; a started run needs only the share of its training
    its checkpoint lacks, plus each analysis it lacks."""
    runs, results, work = study_runs(), tmp_path / "runs", tmp_path / "work"
    first = [r for r in runs if r.spec.config.inference == "amortized"][:2]
    for r, (train, gaps) in zip(first, ((3.0, {"seconds": 1800.0}), (5.0, {"seconds": 2000.0, "core_seconds": 3600.0}))):
        d = results / r.spec.name
        write_run(d, 100, 100)
        (d / "metrics.jsonl").write_text("".join(json.dumps({"episode": e + 1, "train_seconds": train,
                                                             "collect_seconds": 20.0, "plan_seconds": 19.0})
                                                 + "\n" for e in range(100)))
        (d / "analysis" / "gaps.json").write_text(json.dumps(gaps))      # core_seconds where it had several workers
        (d / "analysis" / "uncertainty.json").write_text(json.dumps({"seconds": 36.0}))
    hours = [measured_core_hours(results / r.spec.name) for r in first]
    # planning is in collecting; the analyses in core-hours and in wall-clock hours (less with several workers)
    none = {"uncertainty": 0.01}                        # 36 s of calibration
    assert hours == [RunHours(100 * 23 / 3600, {"gaps": 0.5, **none}, {"gaps": 0.5, **none}),
                     RunHours(100 * 25 / 3600, {"gaps": 1.0, **none}, {"gaps": 2000 / 3600, **none})]
    assert measured_core_hours(results / "absent") is None
    todo = [r for r in runs if r not in first]
    per_run, how = hours_per_run(runs, todo, results)
    assert per_run["amortized"] == RunHours(100 * 24 / 3600, {"gaps": 0.75, **none}, {"gaps": 3800 / 7200, **none})
    assert "amortized 1.4 per run, measured on 2" in how
    assert per_run["semi_amortized"] == RunHours(CORE_HOURS["semi_amortized"] - sum(ANALYSIS_CORE_HOURS.values()),
                                                 ANALYSIS_CORE_HOURS, ANALYSIS_CORE_HOURS)
    assert per_run["semi_amortized"].total == CORE_HOURS["semi_amortized"]
    fresh, started = [r for r in todo if r.spec.config.inference == "amortized"][:2]
    assert abs(hours_needed(fresh, work, per_run) - per_run["amortized"].train - 0.75 - 0.01) < 1e-12
    assert abs(hours_needed(fresh, work, per_run, wall=True) - per_run["amortized"].train - 3800 / 7200 - 0.01) < 1e-12
    write_run(work / started.spec.name, 100, 25, analyses=("gaps",))        # a quarter trained, its gaps measured
    assert abs(hours_needed(started, work, per_run) - (0.75 * per_run["amortized"].train + 0.01)) < 1e-12
    assert abs(hours_needed(started, work, per_run, analyses=False) - 0.75 * per_run["amortized"].train) < 1e-12
    # a killed gap analysis' stored pieces (0.3 of its 0.75 core-hours) are not run again
    pieces = work / started.spec.name / "analysis" / PIECES
    pieces.mkdir()
    (pieces / "a.json").write_text(json.dumps({"seconds": 700.0, "core_seconds": 720.0}))
    (pieces / "b.json").write_text(json.dumps({"seconds": 360.0, "core_seconds": 360.0}))
    (work / started.spec.name / "analysis" / "gaps.json").unlink()
    assert abs(hours_needed(started, work, per_run) - 0.75 * (per_run["amortized"].train + 0.6) - 0.01) < 1e-12
    assert abs(hours_needed(started, work, per_run, wall=True)
               - 0.75 * per_run["amortized"].train - 0.6 * 3800 / 7200 - 0.01) < 1e-12
    write_run(work / fresh.spec.name, 100, 100)                              # trained and analysed: nothing left
    assert hours_needed(fresh, work, per_run) == 0.0
    # what a resumed analysis' gaps.json records: its own seconds, and those of the pieces an earlier call did
    assert core_seconds({"seconds": 900.0, "core_seconds": 1000.0, "settings": {"workers": 2},
                         "resumed_pieces": {"a": {"seconds": 700.0, "core_seconds": 720.0}}}) == 1720.0
    assert wall_seconds({"seconds": 900.0, "core_seconds": 1000.0, "settings": {"workers": 2},
                         "resumed_pieces": {"a": {"seconds": 700.0, "core_seconds": 720.0}}}) == 1250.0
    # --only leaves the done runs out of what it runs, not out of what the estimate is measured on
    assert study_main(["--results", str(results), "--work", str(work), "--dry-run", "--only", started.spec.name]) == 0
    assert "amortized 1.4 per run, measured on 2" in capsys.readouterr().out
    # once a run has settled gaps (fresh encoders at a decaying step size, costlier), the analyses are its mean alone
    third = results / started.spec.name
    write_run(third, 100, 100)
    (third / "metrics.jsonl").write_text((results / first[0].spec.name / "metrics.jsonl").read_text())
    (third / "analysis" / "gaps.json").write_text(json.dumps({"seconds": 5400.0, "settings": {"encoder_lr_schedule":
                                                                                                "cosine"}}))
    todo.remove(started)
    per_run, how = hours_per_run(runs, todo, results)
    assert per_run["amortized"] == RunHours(mean([100 * 23 / 3600, 100 * 25 / 3600, 100 * 23 / 3600]),
                                            {"gaps": 1.5, "uncertainty": 0.0}, {"gaps": 1.5, "uncertainty": 0.0})
    assert "amortized 2.2 per run, measured on 3 (analyses on the 1 with settled gaps)" in how


def test_the_progress_page_shows_each_committed_run_and_each_failure_log(tmp_path):
    runs, results = study_runs(), tmp_path / "runs"
    done, failed = "cartpole-semi_amortized-missing_prob0.5-s1", "cartpole-amortized-free_nats0.0-s3"
    write_run(results / done, 100, 100)
    rows = [{"episode": e + 1} for e in range(100)]
    rows[49]["eval_return"], rows[99]["eval_return"] = 500.0, 612.34
    (results / done / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / f"{failed}.log").write_text("Traceback")
    page = progress(runs, results)
    assert "**1 of 60 runs done**; the other 59 need about" in page
    table = [line for line in page.splitlines() if line.startswith("| main") or line.startswith("| ablation")]
    assert len(table) == 12 and all(line.count("|") == 9 for line in table)
    assert "| main | missing_prob=0.5 | semi_amortized | · | 612.3 | · | · | · |" in table
    assert (f"| ablation | free_nats=0 | amortized | · | · | · | failed ([log](failed/{failed}.log)) | · |"
            in table)
    assert sum(line.count("·") for line in table) == 58
    assert "fresh encoders fitted at a constant step size (before session 22; 1): the reports leave out" in page
    assert "and otherwise trains them again from scratch after every other run" in page
    # its hours as a stale run: the measured hours of its own committed results (the only amortized... run here)
    assert "the other 59 need about" in page and ", and training again the 1 done runs with gaps from before " \
        "session 22 (below) about" in page
    assert page.count(done) == 1
    (results / done / "analysis" / "gaps.json").write_text(json.dumps({"settings": {"encoder_lr_schedule": "cosine"}}))
    page = progress(runs, results)
    assert "constant step size" not in page and "training again" not in page


def test_a_committed_run_brings_the_regenerated_progress_page_and_reports(tmp_path, capsys):
    """The run is committed with the progress page and the comparison report; where the report fails (here:
    metrics without env_steps), the failure is named and the run and progress page are committed all the same."""
    repo = tmp_path / "repo"
    results = repo / "docs" / "study" / "runs"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "user.email", "t@t"], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "user.name", "t"], check=True)
    name = "cartpole-amortized-missing_probnone-s0"
    write_run(results / name, 100, 100)
    for junk in ("checkpoint.pt", "analysis/heldout_episodes.pt"):
        (results / name / junk).unlink()

    def committed(rows: list[dict]) -> list[str]:
        (results / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        assert commit_with_reports([results / name], "study: one run", results, root=repo)
        return subprocess.run(["git", "-C", str(repo), "show", "--name-only", "--format="], capture_output=True,
                              text=True, check=True).stdout.split()

    files = committed([{"episode": e + 1, "eval_return": 700.0 + e} for e in range(100)])
    assert "the reports were not regenerated (KeyError: 'env_steps')" in capsys.readouterr().err
    assert f"docs/study/runs/{name}/metrics.jsonl" in files and "docs/study/progress.md" in files
    assert "| main | full observations | amortized | 799.0 | · | · | · | · |" in (
        repo / "docs" / "study" / "progress.md").read_text()
    assert not any(f.startswith("docs/study/report/") for f in files)
    files = committed([{"episode": e + 1, "env_steps": 1000 * (e + 1), "eval_return": 600.0 + e} for e in range(100)])
    assert "not regenerated" not in capsys.readouterr().err
    assert "docs/study/progress.md" in files and "docs/study/report/report.md" in files
    assert "docs/study/ablation/amortized/report.md" in files          # its free nats 3 side
    assert not any(f.startswith("docs/study/ablation/semi_amortized") for f in files)
    assert "| 699.0 |" in (repo / "docs" / "study" / "progress.md").read_text()


class SynchronousRay:
    """What wait_for_runs uses of Ray, running each task as it is submitted (the scheduling is under test)."""
    def wait(self, refs, num_returns, timeout):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref


def test_runs_that_do_not_fit_are_not_started_and_the_next_that_fits_is(tmp_path):
    plans = [Plan(r.spec, tmp_path / r.spec.name, NEW) for r in study_runs()[:4]]
    started = []

    class Task:
        @staticmethod
        def remote(name):
            started.append(name)
            return 0, 1.0

    too_long = {plans[0].spec.name, plans[2].spec.name}
    ended = []
    records = wait_for_runs(SynchronousRay(), plans, 1, Task, lambda plan: (plan.spec.name,),
                            lambda plan, r: ended.append(plan.spec.name),
                            lambda plan: "not started: needs 2 h" if plan.spec.name in too_long else "")
    assert started == ended == [plans[1].spec.name, plans[3].spec.name]
    assert [records[p.spec.name]["status"] for p in plans] == [NOT_STARTED, FINISHED, NOT_STARTED, FINISHED]
    assert records[plans[0].spec.name]["message"] == "not started: needs 2 h"


def test_where_no_later_run_fits_the_next_trains_until_the_end_of_hours(tmp_path, capsys):
    """Under --hours (1 h from clock 0): a run that does not fit is passed over for a later one that does; where
    none after it fits either, it starts anyway (to train until the deadline) if FILL_HOURS are left and it has
    training left."""
    plans = [Plan(r.spec, tmp_path / r.spec.name, NEW) for r in study_runs()[:4]]
    a, b, c, d = (p.spec.name for p in plans)
    wall = {a: 2.0, b: 0.5, c: 3.0, d: 3.0}
    now = [0.0]
    admit = admission(plans, wall, {a: True, b: True, c: True, d: True}, 3600.0, clock=lambda: now[0])
    assert admit(plans[0]) == "not started: needs about 2.0 h, 1.0 h left of --hours"     # b fits
    assert admit(plans[1]) == ""
    now[0] = 3600 * (1 - FILL_HOURS - 0.05)                                                # 0.3 h left
    assert admit(plans[2]) == "" and admit(plans[3]) == ""                                # nothing later fits
    assert f"{c}: needs about 3.0 h, 0.3 h left of --hours and no later run fits" in capsys.readouterr().err
    assert admit(plans[2], quiet=True) == "" and capsys.readouterr().err == ""
    no_training = admission(plans, wall, {a: True, b: True, c: True, d: False}, 3600.0, clock=lambda: now[0])
    assert no_training(plans[3]).startswith("not started")              # only analyses left: they would not fit
    now[0] = 3600 * (1 - FILL_HOURS + 0.05)                                                # 0.2 h left
    assert admit(plans[3]) == "not started: needs about 3.0 h, 0.2 h left of --hours"
    assert admission(plans, wall, dict.fromkeys(wall, True), None)(plans[2]) == ""         # no --hours


def test_a_training_stopped_at_the_end_of_hours_is_said_and_nothing_is_copied(tmp_path, monkeypatch, capsys):
    """main's wiring under --hours (Ray left out: run_on_ray is replaced by one that does what a task stopped at
    the deadline leaves behind): the task gets the end of --hours as its train_by; a run whose training ended
    unfinished is said to have stopped, not to be unanalysed, and the summary counts it."""
    import sweeps.study as study
    name = study_runs()[0].spec.name
    results, work = tmp_path / "runs", tmp_path / "work"
    tasks = []

    def stopped_at_episode_30(plans, args, group, task_fn, task_args, on_record, admit):
        (plan,) = plans
        assert admit(plan) == "" and task_fn is study.study_task
        tasks.append(task_args(plan))
        plan.run_dir.mkdir(parents=True)
        plan.spec.config.save(plan.run_dir / "config.json")
        (plan.run_dir / "metrics.jsonl").write_text("".join(json.dumps({"episode": e + 1}) + "\n" for e in range(30)))
        r = record(plan.spec.name, plan.run_dir, FINISHED, 1.0, 0)
        on_record(plan, r)
        return {plan.spec.name: r}

    monkeypatch.setattr(study, "run_on_ray", stopped_at_episode_30)
    before = time.time()
    assert study_main(["--results", str(results), "--work", str(work), "--hours", "3", "--only", name]) == 0
    train_by = tasks[0][-1]
    assert before + 3 * 3600 <= train_by <= time.time() + 3 * 3600
    out = capsys.readouterr()
    assert f"{name}: trained to episode 30 of 100 when --hours ended: the next call resumes it" in out.err
    assert "no longer fit" not in out.err
    assert "0 runs finished, 0 failed, 1 stopped training at the end of --hours" in out.out
    assert not (results / name).exists()


def test_hours_that_fit_no_run_start_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sweeps.study", "--results", str(tmp_path / "runs"), "--work",
                          str(tmp_path / "work"), "--hours", "0.1"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "no run fits in --hours 0.1: the shortest needs about" in out.stdout
    assert not (tmp_path / "work").exists()


def test_runs_started_in_the_work_folder_run_first_then_the_study_order(tmp_path):
    """A run with a checkpoint or stored analyses in `work` goes before the runs not started, whatever its seed; the
    others keep the study's order; a stale run whose new training is under way leads the runs trained again."""
    results, work = tmp_path / "runs", tmp_path / "work"
    runs = study_runs()
    order = lambda: [r.spec.name for r in what_to_do(runs, results, work)[1]]
    assert order() == [r.spec.name for r in runs]
    late, later = runs[40].spec.name, runs[55].spec.name
    write_run(work / later, 100, 100)           # trained; its analyses left
    write_run(work / late, 100, 30, analyses=())
    assert order() == [late, later] + [r.spec.name for r in runs if r.spec.name not in (late, later)]
    stale_names = [r.spec.name for r in runs[:2]]
    for name in stale_names:
        write_run(results / name, 100, 100)     # committed with unsettled gaps, training gone: trained again
    write_run(work / stale_names[1], 100, 10, analyses=())
    again, unfinished, retrain = what_to_do(runs, results, work)
    assert again == [] and [r.spec.name for r in retrain] == stale_names[::-1]
    assert [r.spec.name for r in unfinished][:2] == [late, later] and len(unfinished) == 58


def test_done_runs_with_unsettled_fresh_encoders_are_reanalysed_where_their_checkpoint_is_else_trained_again(tmp_path):
    """A committed run whose gaps.json has no cosine schedule of its fresh encoders is re-analysed where the work folder
    holds its finished training (checkpoint included), only its gaps: the local gaps.json of the old fit is dropped,
    one already measured with settled fits is kept. Without the local run it is trained again, after every run the
    study lacks; with settled gaps nothing is redone."""
    name = "cartpole-amortized-missing_probnone-s0"
    results, work = tmp_path / "runs", tmp_path / "work"
    runs = study_runs()
    write_run(results / name, 100, 100)
    (results / name / "metrics.jsonl").write_text("".join(json.dumps({"episode": e + 1, "train_seconds": 10.0})
                                                          + "\n" for e in range(100)))
    dry_run = lambda: subprocess.run([sys.executable, "-m", "sweeps.study", "--results", str(results), "--work",
                                      str(work), "--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert not reanalysable(results / name, work / name)           # trained elsewhere: trained again, last
    again, unfinished, retrain = what_to_do(runs, results, work)
    assert again == [] and len(unfinished) == 59 and [r.spec.name for r in retrain] == [name]
    out = dry_run()
    assert out.returncode == 0, out.stderr
    assert "1 of 60 runs done; 59 to run, 1 to train again (training gone) (gaps with fresh encoders" in out.stdout
    assert f"{name}: train again, new (about 0.3 core-hours)" in out.stdout      # its 100 x 10 s of training
    write_run(work / name, 100, 40, analyses=())                   # a new training under way: resumed
    assert f"{name}: train again, resume (about 0.2 core-hours)" in dry_run().stdout
    shutil.rmtree(work / name)
    write_run(work / name, 100, 100)
    assert reanalysable(results / name, work / name)
    again, _, retrain = what_to_do(runs, results, work)
    assert [r.spec.name for r in again] == [name] and retrain == []
    assert what_to_do(runs, results, work, train_only=True)[0::2] == ([], [])       # --train-only: nothing to train
    out = dry_run()
    assert out.returncode == 0, out.stderr
    assert "1 of 60 runs done; 59 to run, 1 to re-analyse" in out.stdout and "train again" not in out.stdout
    assert f"{name}: re-analyse (about" in out.stdout
    assert (work / name / "analysis" / "gaps.json").is_file()          # a dry run deletes nothing
    drop_unsettled_gaps(work / name)
    assert not (work / name / "analysis" / "gaps.json").exists()
    assert (work / name / "analysis" / "uncertainty.json").is_file()  # its other analysis stays
    settled = json.dumps({"settings": {"encoder_lr_schedule": "cosine"}})
    (work / name / "analysis" / "gaps.json").write_text(settled)
    drop_unsettled_gaps(work / name)
    assert (work / name / "analysis" / "gaps.json").read_text() == settled
    (results / name / "analysis" / "gaps.json").write_text(settled)
    assert not reanalysable(results / name, work / name)


def test_the_commit_message_says_whether_a_stale_run_was_trained_again_or_only_measured_again(tmp_path):
    write_run(tmp_path, 100, 100)
    rows = [{"episode": e + 1} for e in range(99)] + [{"episode": 100, "eval_return": 812.34}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    old = (tmp_path / "metrics.jsonl").read_text()
    assert what_was_done(tmp_path, None) == "final evaluation return 812.3"              # a new run
    assert what_was_done(tmp_path, old) == "gaps measured again, fresh encoders fitted with the cosine step size"
    assert what_was_done(tmp_path, old.replace("812.34", "700.0")) == (
        "trained again: its gaps were from before session 22 and its training gone; final evaluation return 812.3")
