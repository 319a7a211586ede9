"""The study (docs/study/README.md): does better inference give better world models and better control?

    python -m sweeps.study --dry-run       # every run, whether it is done, and the core-hours the rest needs
    python -m sweeps.study --commit        # run what is missing (local Ray, one run per core), committing each
    python -m sweeps.study --report        # progress page and reports from the committed results only
    python -m sweeps.study --train-only    # train the next runs without analysing them (the end of a sitting)

The study knows every run it needs:
- main: cartpole swingup from state with full observations, and with each observation missing with probability
  0.5 (the obs-valid flag goes to model and posterior); every registered posterior at its defaults; seeds 0-4;
  100 episodes, one evaluation episode every 10 and ten at episodes 50 and 100 (the agent's defaults): 50 runs.
- ablation: amortized and semi_amortized with free nats 0 on full observations, seeds 0-4: 10 runs. Their free
  nats 3 counterparts are the main study's full-observation runs (3 is the default), not run twice.
Each run also gets, on its frozen final model, the gap decomposition (analysis.world_model_gaps, sized in ANALYSES:
same-family q*, AIS log p(x), a BDMC sandwich) and the calibration (analysis.uncertainty at its defaults).

A run is done when RESULTS/<name>/ holds its config, complete metrics and both analyses; nothing else is looked at,
so a fresh clone continues where the committed results end. Every other run is started or resumed in WORK/<name>
(checkpoints and replay, never committed): training resumes from its last checkpoint, an analysis that did not
finish is rerun, and the light results (config.json, metrics.jsonl, learning_curve.png, analysis/*.json|md|png) are
copied to RESULTS/<name>/ when all three steps are done, and committed there with --commit, together with the
progress page and reports regenerated (--report). A failed run's log is copied to RESULTS/../failed/<name>.log
(committed with --commit) and the run is retried on the next call.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from agent.config import WANDB_MODES, AgentConfig
from agent.report import read_metrics
from analysis.workers import PieceStore
from analysis.world_model_gaps import PIECES
from world_models.posteriors.registry import POSTERIORS

from .commit import commit
from .execute import ROOT, agent_command, run_logged
from .grid import RunSpec, expand
from .launch import run_on_ray
from .status import NEW, RESUME, Plan, is_finished
from .summary import FAILED, NOT_STARTED, final_eval_return

SEEDS = (0, 1, 2, 3, 4)
FIXED = {"episodes": 100, "physics_state": True}     # physical states stored for the calibration's state read-out
MIDPOINT = 50         # the other episode with ten evaluation episodes (eval_episodes_every): a report cut there too
MAIN_GRID = {"missing_prob": [None, 0.5]}
ABLATION = (("amortized", "semi_amortized"), {"free_nats": [0.0]})
FREE_NATS_DEFAULT = AgentConfig().free_nats      # the ablation's other side: the main study's runs
# the analyses per run, {output: (module, options)}: the gap decomposition on held-out windows only (the report reads
# those) at the command's default sizes, and the calibration at its defaults. Both splits cost 78 min on this 2-core
# CPU beside other jobs, with 16 windows per split (docs/agent) as with 8 (4660 s against 4701 s, amortized, session
# 9, not side by side); so each split is what costs. AIS alone does grow with the windows: 7.1, 12.4 and 22.5 s for
# 4, 8 and 16 windows x 16 chains (20 AIS steps, cartpole RSSM, one process, session 11).
# The gaps run their independent pieces in 2 processes (--workers; the same numbers as with 1): where the other core
# is idle, as at the end of a sitting, that halves most of the analysis' wall-clock; where both are busy it costs
# nothing, the pieces share the cores with the other run.
GAPS = "gaps"               # the gap analysis: the one analysis that keeps pieces (PIECES) and is redone for stale gaps
ANALYSES = {GAPS: ("world_model_gaps", ("--splits", "heldout", "--workers", "2")), "uncertainty": ("uncertainty", ())}
LIGHT = ("config.json", "metrics.jsonl", "learning_curve.png")
REANALYSE = "re-analyse"    # a done run's action where only its gaps are measured again (reanalysable)
RETRAIN = "train again"     # a done run's label where its unsettled gaps need a new training (stale, not reanalysable)
ANALYSIS_FILES = ("*.json", "*.md", "*.png")
# core-hours per run on this project's 2-core CPU beside other jobs, for the estimates of what is left where no run of
# that posterior is done yet (the measured hours of done runs replace them as runs finish): training (amortized 20 min
# for 100 episodes at the defaults, docs/throughput/return; the others scaled by docs/throughput's seconds per
# episode) plus the analyses (ANALYSIS_CORE_HOURS: the gaps on one split, 25 s calibration)
CORE_HOURS = {"amortized": 1.3, "amortized_smoothing": 1.4, "semi_amortized": 1.6, "per_sequence": 1.5,
              "iterative_amortized": 2.4}
ANALYSIS_CORE_HOURS = {GAPS: 0.9 - 25 / 3600, "uncertainty": 25 / 3600}
# the least wall-clock hours left of --hours for which a run that does not fit starts anyway, to train until --hours
# ends (about 15 episodes at the defaults) where no later run fits: its checkpoint is resumed by the next call
FILL_HOURS = 0.25


@dataclass(frozen=True)
class RunHours:
    """Hours of one run: its training (all episodes, one core) and each of its analyses (ANALYSES), in core-hours
    and in wall-clock hours (fewer where the analysis had several worker processes and a free core)."""
    train: float
    analyses: dict[str, float]          # {analysis: core-hours}
    analyses_wall: dict[str, float]     # {analysis: wall-clock hours}

    @property
    def total(self) -> float:
        """Core-hours of the whole run: its training and every analysis."""
        return self.train + sum(self.analyses.values())


@dataclass(frozen=True)
class StudyRun:
    part: str             # "main" or "ablation"
    spec: RunSpec


def study_runs(wandb: str = "offline") -> list[StudyRun]:
    """Every run of the study in the order they run: seed by seed (every group's seed 0, then every group's seed 1,
    ...; within a seed the main part first), so that a study stopped at any point has comparable groups."""
    fixed = {**FIXED, "wandb": wandb}
    main = expand(["cartpole"], list(POSTERIORS), list(SEEDS), MAIN_GRID, fixed)
    inferences, grid = ABLATION
    ablation = expand(["cartpole"], list(inferences), list(SEEDS), grid, fixed)
    runs = [StudyRun("main", s) for s in main] + [StudyRun("ablation", s) for s in ablation]
    return sorted(runs, key=lambda r: r.spec.config.seed)       # stable: the parts and groups keep their order


def is_done(results: Path) -> bool:
    """The run's committed results are complete: config, all episodes' metrics, both analyses."""
    try:
        return is_finished(results) and all((results / "analysis" / f"{a}.json").is_file() for a in ANALYSES)
    except (OSError, ValueError):       # absent or unreadable: not done
        return False


def gaps_settled(run_dir: Path) -> bool:
    """Whether run_dir's gap analysis fitted its fresh encoders with a decaying step size (analysis.run_results'
    settled_fresh_fits); False where it is absent or unreadable."""
    from analysis.run_results import settled_fresh_fits
    try:
        return settled_fresh_fits(json.loads((run_dir / "analysis" / "gaps.json").read_text()))
    except (OSError, ValueError):
        return False


def stale(results: Path) -> bool:
    """A committed run whose gap analysis fitted its fresh encoders at a constant step size (the runs analysed before
    session 22): its conditioning gap and own minus fresh are left out of the reports until it is measured again."""
    return is_done(results) and not gaps_settled(results)


def reanalysable(results: Path, run_dir: Path) -> bool:
    """A stale committed run whose finished training, checkpoint included, is in `run_dir`: its gaps are measured
    again there and committed over the old ones. One trained on a machine whose runs/ is gone is trained again
    (RETRAIN), after every run the study lacks."""
    try:
        return stale(results) and (run_dir / "checkpoint.pt").is_file() and is_finished(run_dir)
    except (OSError, ValueError):      # unreadable: nothing to re-analyse from
        return False


def drop_unsettled_gaps(run_dir: Path) -> None:
    """Delete run_dir's own gap analysis where it is one with unsettled fresh encoders, so that the run's study_task
    measures its gaps again (one already measured again, whose commit was missed, is kept and copied)."""
    if not gaps_settled(run_dir):
        (run_dir / "analysis" / "gaps.json").unlink(missing_ok=True)


def measured_core_hours(results: Path) -> RunHours | None:
    """Core-hours a done run took, from what its committed results record: every episode's training, collecting
    and evaluation seconds, and both analyses' (core_seconds, and wall-clock seconds), as hours of one core (the
    study's default of one torch thread per run; checkpointing and plotting are not counted); None where the run is
    not done."""
    if not is_done(results):
        return None
    from analysis.run_results import episode_seconds
    train = sum(map(episode_seconds, read_metrics(results)))
    analyses = {a: json.loads((results / "analysis" / f"{a}.json").read_text()) for a in ANALYSES}
    return RunHours(train / 3600, {a: core_seconds(r) / 3600 for a, r in analyses.items()},
                    {a: wall_seconds(r) / 3600 for a, r in analyses.items()})


def core_seconds(analysis: dict) -> float:
    """An analysis' CPU seconds: core_seconds where it ran in several processes, else its wall-clock seconds; plus
    those of the pieces it resumed (resumed_pieces: done by an earlier, killed call)."""
    return analysis.get("core_seconds", analysis.get("seconds", 0.0)) + sum(
        p["core_seconds"] for p in analysis.get("resumed_pieces", {}).values())


def wall_seconds(analysis: dict) -> float:
    """An analysis' wall-clock seconds, the pieces it resumed counted as if they had shared its workers."""
    resumed = sum(p["seconds"] for p in analysis.get("resumed_pieces", {}).values())
    return analysis.get("seconds", 0.0) + resumed / analysis.get("settings", {}).get("workers", 1)


def hours_per_run(runs: list[StudyRun], todo: list[StudyRun], results: Path) -> tuple[dict[str, RunHours], str]:
    """({posterior: core-hours of one of its runs}, how that was estimated): the mean of its done runs'
    measured_core_hours, or CORE_HOURS (ANALYSIS_CORE_HOURS of it the analyses) where none of its runs is done. The
    analyses' hours are the mean over its runs with settled gaps where it has any (every analysis from now on fits
    its fresh encoders that way, which costs more than the constant step size of the older ones)."""
    measured: dict[str, list[tuple[RunHours, bool]]] = {}
    for r in runs:
        if r not in todo and (h := measured_core_hours(d := results / r.spec.name)) is not None:
            measured.setdefault(r.spec.config.inference, []).append((h, gaps_settled(d)))
    per_run, how = {}, []
    for k, v in measured.items():
        settled = [h for h, s in v if s] or [h for h, _ in v]
        per_run[k] = RunHours(mean(h.train for h, _ in v), {a: mean(h.analyses[a] for h in settled) for a in ANALYSES},
                              {a: mean(h.analyses_wall[a] for h in settled) for a in ANALYSES})
        how.append(f"{k} {per_run[k].total:.1f} per run, measured on {len(v)}"
                   + (f" (analyses on the {len(settled)} with settled gaps)" if len(settled) < len(v) else ""))
    how = "; ".join(how)
    for k, h in CORE_HOURS.items():
        per_run.setdefault(k, RunHours(h - sum(ANALYSIS_CORE_HOURS.values()), ANALYSIS_CORE_HOURS, ANALYSIS_CORE_HOURS))
    return per_run, (how + "; " if how else "") + "estimated from docs/throughput where none is done"


def hours_needed(run: StudyRun, work: Path, per_run: dict[str, RunHours], analyses: bool = True,
                 wall: bool = False) -> float:
    """Core-hours (wall: wall-clock hours) `run` still needs: the share of its training that work/<name> has not
    checkpointed yet and, with `analyses`, the analyses it lacks (analyses_left)."""
    h, run_dir = per_run[run.spec.config.inference], work / run.spec.name
    try:
        trained = len(read_metrics(run_dir)) / run.spec.config.episodes if (run_dir / "config.json").exists() else 0.0
    except ValueError:      # an unreadable metrics.jsonl: counted as untrained
        trained = 0.0
    return h.train * max(0.0, 1.0 - trained) + (analyses_left(h, run_dir, wall) if analyses else 0.0)


def analyses_left(h: RunHours, run_dir: Path, wall: bool = False) -> float:
    """Core-hours (wall: wall-clock hours) of the analyses run_dir lacks (no analysis/<name>.json), each at its
    hours in `h`; the gap analysis less the share that its stored pieces (from a killed call, which the next one
    resumes) took."""
    hours, left = h.analyses_wall if wall else h.analyses, 0.0
    for a in ANALYSES:
        if not (run_dir / "analysis" / f"{a}.json").is_file():
            stored = PieceStore.stored_core_seconds(run_dir / "analysis" / PIECES) / 3600 if a == GAPS else 0.0
            left += hours[a] * (max(0.0, 1.0 - stored / h.analyses[a]) if h.analyses[a] > 0 else 0.0)
    return left


def trained(run_dir: Path) -> bool:
    """Whether run_dir's training is finished (is_finished); True where its files cannot be read, so that a run is
    only said to have stopped early where its metrics say so."""
    try:
        return is_finished(run_dir)
    except (OSError, ValueError):
        return True


def admission(plans: list[Plan], wall: dict[str, float], training: dict[str, bool], deadline: float | None,
              clock=time.monotonic):
    """admit(plan) for run_on_ray under --hours (deadline: a `clock` time; None: no limit): "" to start the plan
    where the wall-clock hours it needs (`wall`, by name) fit in what is left; where neither it nor any plan after it
    fits, but at least FILL_HOURS are left and it has training left (`training`, by name), "" as well: it trains
    until the deadline (study_task's train_by) and the next call resumes its checkpoint, rather than a core idling
    through the end of a sitting (said on stderr unless `quiet`); the filler is always the plan being offered, never
    an earlier one passed over for a later one that fitted. Otherwise why it is not started."""
    position = {p.spec.name: i for i, p in enumerate(plans)}

    def admit(plan: Plan, quiet: bool = False) -> str:
        left = math.inf if deadline is None else (deadline - clock()) / 3600
        needs = wall[plan.spec.name]
        if needs <= left:
            return ""
        if (left >= FILL_HOURS and training[plan.spec.name]
                and not any(wall[p.spec.name] <= left for p in plans[position[plan.spec.name] + 1:])):
            if not quiet:
                print(f"{plan.spec.name}: needs about {needs:.1f} h, {left:.1f} h left of --hours and no later run "
                      f"fits: it trains until --hours ends", file=sys.stderr)
            return ""
        return f"not started: needs about {needs:.1f} h, {left:.1f} h left of --hours"
    return admit


def study_task(command: list[str], run_dir: str, results: str, threads: int, analyses: dict | None = ANALYSES,
               analyses_by: float | None = None, train_by: float | None = None) -> tuple[int, float]:
    """One run end to end (a Ray task): train (or resume) unless finished, each analysis whose output
    (RUN/analysis/<name>.json) is missing, then copy the light results to `results`; with analyses=None, train only
    (nothing is copied). analyses_by (time.time() seconds): the latest time the analyses may start, after training;
    later, they are left for the next call (an analysis killed at the end of a sitting resumes from the pieces of the
    gap analysis it finished, analysis/world_model_gaps.py) and nothing is copied. train_by (time.time() seconds):
    when training stops at its last checkpoint (run_agent.py --minutes), unfinished, for the next call to resume.
    Returns (exit code of the first failing step or 0, seconds)."""
    start, run_dir, results = time.monotonic(), Path(run_dir), Path(results)
    if not ((run_dir / "config.json").exists() and is_finished(run_dir)):
        if train_by is not None and train_by <= time.time():
            return 0, time.monotonic() - start
        minutes = [] if train_by is None else ["--minutes", f"{(train_by - time.time()) / 60:.3f}"]
        code, _ = run_logged([*command, *minutes], str(run_dir), threads)
        if code:
            return code, time.monotonic() - start
        if not is_finished(run_dir):        # stopped at train_by
            return 0, time.monotonic() - start
    if analyses is None or analyses_by is not None and time.time() > analyses_by:
        return 0, time.monotonic() - start
    for name, (module, options) in analyses.items():
        if not (run_dir / "analysis" / f"{name}.json").is_file():
            code, _ = run_logged([sys.executable, "-m", f"analysis.{module}", str(run_dir), *options, "--threads",
                                  str(threads)], str(run_dir), threads)
            if code:
                return code, time.monotonic() - start
    copy_light_results(run_dir, results)
    return 0, time.monotonic() - start


def copy_light_results(run_dir: Path, results: Path) -> None:
    """The files that are committed: config, metrics, learning curve and the analyses' JSON, markdown and PNGs,
    written to a temporary folder first so that `results` is either complete or absent."""
    tmp = results.with_name(results.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "analysis").mkdir(parents=True)
    for name in LIGHT:
        shutil.copy2(run_dir / name, tmp / name)
    for path in sorted((run_dir / "analysis").iterdir()):
        if any(fnmatch.fnmatch(path.name, p) for p in ANALYSIS_FILES) and path.is_file():
            shutil.copy2(path, tmp / "analysis" / path.name)
    shutil.rmtree(results, ignore_errors=True)
    tmp.rename(results)


def action(work: Path, name: str) -> str:
    """RESUME where the run has started in `work` (its config.json is there), NEW otherwise."""
    return RESUME if (work / name / "config.json").exists() else NEW


def group_label(run: StudyRun) -> str:
    """The task variant a run belongs to, as the progress table names it."""
    c = run.spec.config
    if run.part == "ablation":
        return f"free_nats={c.free_nats:g}"
    return "full observations" if c.missing_prob is None else f"missing_prob={c.missing_prob:g}"


def progress(runs: list[StudyRun], results: Path) -> str:
    """Markdown: which runs are committed (each done run's final evaluation return, one row per group and a column
    per seed), which have a failure log, and the core-hours the rest needs (mean measured hours of the done runs of
    each posterior; CORE_HOURS where none is done), from `results` alone, so every clone writes the same page."""
    todo = [r for r in runs if not is_done(results / r.spec.name)]
    stale_runs = [r for r in runs if stale(results / r.spec.name)]
    per_run, how = hours_per_run(runs, todo, results)
    hours = lambda rs: sum(per_run[r.spec.config.inference].total for r in rs)
    failed = results.parent / "failed"
    groups: dict[tuple[str, str, str], dict[int, str]] = {}
    for r in runs:
        name, c = r.spec.name, r.spec.config
        if r not in todo:
            final = final_eval_return(results / name)
            cell = "done" if final is None else f"{final:.1f}"
        else:
            cell = f"failed ([log](failed/{name}.log))" if (failed / f"{name}.log").is_file() else "·"
        groups.setdefault((r.part, group_label(r), c.inference), {})[c.seed] = cell
    lines = ["# Study progress", "",
             "Written by `python -m sweeps.study --report` from the committed results in [runs/](runs/) only. "
             "A cell is a committed run's final evaluation return (mean of its 10 evaluation episodes at episode "
             "100), `·` a run not committed yet, `failed` a run whose last attempt failed (its log is linked; the "
             "next call of the study retries it).", "",
             f"**{len(runs) - len(todo)} of {len(runs)} runs done**; the other {len(todo)} need about "
             f"{hours(todo):.0f} core-hours on this project's 2-core CPU, one core per run"
             + (f", and training again the {len(stale_runs)} done runs with gaps from before session 22 (below) about "
                f"{hours(stale_runs):.0f} more" if stale_runs else "") + f" ({how}).", "",
             "| part | task variant | inference | " + " | ".join(f"seed {s}" for s in SEEDS) + " |",
             "|---|---|---|" + "---|" * len(SEEDS)]
    for (part, label, inference), cells in groups.items():
        lines.append(f"| {part} | {label} | {inference} | " + " | ".join(cells.get(s, "") for s in SEEDS) + " |")
    if stale_runs:
        lines += ["", "Done runs whose gaps were measured with fresh encoders fitted at a constant step size "
                      f"(before session 22; {len(stale_runs)}): the reports leave out their conditioning gap and own "
                      "minus fresh; the study measures their gaps again where runs/study2 still holds the finished "
                      "training, and otherwise trains them again from scratch after every other run and commits the "
                      "new run over the old one: " + ", ".join(r.spec.name for r in stale_runs) + "."]
    lines += ["", "Reports, regenerated with this page: [the main study](report/report.md) (every posterior against "
              f"amortized), [the same at episode {MIDPOINT}](report_episode{MIDPOINT}/report.md) (returns only); the "
              "free-nats ablation, free nats 0 against 3, for "
              + " and ".join(f"[{i}](ablation/{i}/report.md)" for i in ABLATION[0]) + "."]
    return "\n".join(lines) + "\n"


def report(results: Path, out: Path) -> tuple[int, list[Path]]:
    """The progress page, the main study's comparison report (analysis.compare, against amortized), the same cut at
    episode MIDPOINT (returns of its 10 evaluation episodes there; no analyses, which are of the final model), and
    one free-nats ablation report per ablated posterior (its free nats 0 runs against its free nats 3 ones, the main
    study's full-observation runs), from the committed results. Returns (exit code, the files and folders written)."""
    from analysis import compare

    all_runs = study_runs()
    (out / "progress.md").write_text(progress(all_runs, results))
    done = [r for r in all_runs if is_done(results / r.spec.name)]
    # paths relative to the working directory, so that the reports' command lines are the same on every checkout
    rel = lambda runs: [os.path.relpath(results / r.spec.name) for r in runs]
    main = rel(r for r in done if r.part == "main")
    reports = [(main, out / "report", ["--baseline", "amortized"]),
               (main, out / f"report_episode{MIDPOINT}", ["--baseline", "amortized", "--until-episode", str(MIDPOINT)])]
    for inference in ABLATION[0]:
        reports.append((rel(r for r in done if r.spec.config.inference == inference and (
            r.part == "ablation" or r.spec.config.missing_prob is None)), out / "ablation" / inference,
            ["--baseline", f"{inference} free_nats={FREE_NATS_DEFAULT}"]))
    print(f"{len(done)} of {len(all_runs)} runs done (wrote {os.path.relpath(out / 'progress.md')})")
    code, written = 0, [out / "progress.md"]
    for dirs, folder, options in reports:
        if dirs:
            code |= compare.main([*dirs, "--out", os.path.relpath(folder), *options])
            written.append(folder)
    return code, written


def commit_with_reports(paths: list[Path], message: str, results: Path, root: Path = ROOT) -> bool:
    """Regenerate the progress page and the reports (`report`) from `results` into its parent folder, and commit
    them with `paths` in one commit, so that what is committed always reads every committed run. A report that
    fails is named on stderr and `paths` are committed all the same; True if the commit was made."""
    try:
        written = report(results, results.parent)[1]
    except Exception as e:      # a bug in a report must not leave a finished run uncommitted
        print(f"sweeps.study: the reports were not regenerated ({type(e).__name__}: {e}); committing the run alone",
              file=sys.stderr)
        written = [p for p in [results.parent / "progress.md"] if p.exists()]    # written before any report
    return commit([*paths, *written], message, "sweeps.study", root)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sweeps.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "docs/study/runs",
                   help="where each run's light results are committed (default docs/study/runs)")
    p.add_argument("--work", type=Path, default=ROOT / "runs/study2",
                   help="where runs train, with checkpoints and replay (default runs/study2; not committed)")
    p.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                   help="run only the runs whose names match one of these glob patterns (e.g. '*-amortized-*')")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="most runs at once (default: one per CPU of the local Ray instance)")
    p.add_argument("--cpus-per-run", type=int, default=1, help="CPUs (and torch threads) per run (default 1)")
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: a new local instance)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="offline", help="wandb mode of every run (default offline)")
    p.add_argument("--commit", action="store_true",
                   help="git-commit each run's results (and failure logs) as it ends, with the progress page and the "
                        "reports regenerated")
    p.add_argument("--train-only", action="store_true",
                   help="train (or resume) the runs that are left, without their analyses, and commit nothing: for "
                        "the end of a session, where an analysis (about an hour; killed, it keeps only the pieces "
                        "it finished) would not finish but training (checkpointed every episode) loses nothing; a "
                        "later call without it analyses them")
    p.add_argument("--hours", type=float, default=None,
                   help="wall-clock hours this call may take: a run starts only where the hours it still needs "
                        "(measured on done runs of its posterior, less what its checkpoint holds; its analyses' "
                        "wall-clock, shorter than their core-hours where their workers had a free core) fit in what "
                        "is left, else the next one in order that fits is tried, and where none fits (but "
                        f"{FILL_HOURS * 60:.0f} minutes are left) the next run with training left trains until "
                        "--hours ends, stopping at its checkpoint for the next call to resume (where runs/study2 "
                        "survives); after its "
                        "training, a run's analyses start only where they still fit (else the next call does them: "
                        "an analysis killed at the end of a sitting resumes from the pieces it finished, where the "
                        "run folder survives); every training stops at its checkpoint when --hours end (a run "
                        "slower than its estimate too); leave a few minutes for committing. Default: no limit")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what is left; run nothing")
    p.add_argument("--report", action="store_true",
                   help="write docs/study/progress.md (which runs are done), docs/study/report (main study), "
                        "docs/study/report_episode50 (the same at episode 50) and docs/study/ablation/<posterior> "
                        "(free nats 0 against 3) from the committed results")
    args = p.parse_args(argv)
    if args.max_concurrent is not None and args.max_concurrent < 1 or args.cpus_per_run < 1:
        p.error("--max-concurrent and --cpus-per-run must be >= 1")
    if args.hours is not None and args.hours <= 0:
        p.error(f"--hours must be > 0, got {args.hours}")
    return args


def what_to_do(runs: list[StudyRun], results: Path, work: Path,
               train_only: bool = False) -> tuple[list[StudyRun], list[StudyRun], list[StudyRun]]:
    """(again, unfinished, retrain), run in that order: first the stale runs whose finished training is in `work`
    (their gaps measured again before runs/ is lost; none with train_only), then the runs not done, then the other
    stale runs, whose training is gone: trained again from scratch after every run the study lacks, so that new seeds
    come first, and committed over their old results. Within each list, the runs started in `work` (`action`: their
    config.json there, with whatever training and analyses they stored) come first, for the same reason, then the
    study's order."""
    started_first = lambda rs: sorted(rs, key=lambda r: action(work, r.spec.name) == NEW)    # stable
    unfinished = [r for r in runs if not is_done(results / r.spec.name)]
    local = [r for r in runs if reanalysable(results / r.spec.name, work / r.spec.name)]
    retrain = [r for r in runs if stale(results / r.spec.name) and r not in local]
    return [] if train_only else local, started_first(unfinished), started_first(retrain)


def what_was_done(results: Path, old_metrics: str | None) -> str:
    """The commit message's account of a run that `results` now holds: its final evaluation return, and for a run
    that was stale before (old_metrics: its committed metrics.jsonl then), whether it was trained again (its metrics
    changed) or only its gaps measured again."""
    final = final_eval_return(results)
    returned = f"final evaluation return {'none' if final is None else f'{final:.1f}'}"
    if old_metrics is None:
        return returned
    if (results / "metrics.jsonl").read_text() != old_metrics:
        return f"trained again: its gaps were from before session 22 and its training gone; {returned}"
    return "gaps measured again, fresh encoders fitted with the cosine step size"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(args.results, args.results.parent)[0]
    runs = [r for r in study_runs(args.wandb)
            if args.only is None or any(fnmatch.fnmatch(r.spec.name, p) for p in args.only)]
    if not runs:
        print(f"sweeps.study: error: no run matches --only {' '.join(args.only)}; run names look like "
              f"{study_runs()[0].spec.name}", file=sys.stderr)
        return 2
    again, unfinished, retrain = what_to_do(runs, args.results, args.work, args.train_only)
    if not args.dry_run:
        for r in again:
            drop_unsettled_gaps(args.work / r.spec.name)
    todo = again + unfinished + retrain
    per_run, how = hours_per_run(study_runs(), unfinished, args.results)   # measured on every done run, not --only's
    need = {r.spec.name: per_run[r.spec.config.inference].analyses[GAPS] if r in again    # only its gaps again
            else hours_needed(r, args.work, per_run) for r in todo}
    print(f"{len(runs) - len(unfinished)} of {len(runs)} runs done; {len(unfinished)} to run"
          + (f", {len(again)} to re-analyse" if again else "")
          + (f", {len(retrain)} to {RETRAIN} (training gone)" if retrain else "")
          + (" (gaps with fresh encoders fitted at a constant step size)" if again or retrain else "")
          + f", about {sum(need.values()):.0f} core-hours ({how})")
    if args.dry_run:
        for r in runs:
            doing = (REANALYSE if r in again else f"{RETRAIN}, {action(args.work, r.spec.name)}" if r in retrain
                     else action(args.work, r.spec.name))
            left = f"{doing} (about {need[r.spec.name]:.1f} core-hours)" if r in todo else "done"
            print(f"  {r.part:8s} {r.spec.name}: {left}")
        return 0
    if not todo:
        return 0
    failed_logs = args.results.parent / "failed"

    # the end of --hours, as a time.time() (read in Ray workers) and as a time.monotonic() (admission, here)
    ends = None if args.hours is None else time.time() + args.hours * 3600
    deadline = None if ends is None else time.monotonic() + (ends - time.time())

    def task_args(plan: Plan):
        command = agent_command(plan.spec.config, plan.run_dir, plan.action in (RESUME, REANALYSE), args.cpus_per_run,
                                "study")
        analyses_by = None if ends is None else ends - analyses_left(per_run[plan.spec.config.inference], plan.run_dir,
                                                                     wall=True) * 3600
        return (command, str(plan.run_dir), str(args.results / plan.spec.name), args.cpus_per_run,
                None if args.train_only else ANALYSES, analyses_by, ends)

    unanalysed, stopped = [], []
    old_metrics = {r.spec.name: (args.results / r.spec.name / "metrics.jsonl").read_text() for r in again + retrain}

    def on_record(plan: Plan, record: dict) -> None:
        results = args.results / plan.spec.name
        if record["status"] == FAILED:
            failed_logs.mkdir(parents=True, exist_ok=True)
            log = failed_logs / f"{plan.spec.name}.log"
            if (plan.run_dir / "log.txt").exists():
                shutil.copy2(plan.run_dir / "log.txt", log)
                if args.commit:
                    commit_with_reports([log], f"study: {plan.spec.name} failed ({record['message']}); its log",
                                        args.results)
        elif not trained(plan.run_dir):     # its training stopped where --hours ended
            stopped.append(plan.spec.name)
            print(f"{plan.spec.name}: trained to episode {len(read_metrics(plan.run_dir))} of "
                  f"{plan.spec.config.episodes} when --hours ended: the next call resumes it", file=sys.stderr)
        elif not args.train_only and (not is_done(results) or stale(results)):  # its analyses no longer fitted
            unanalysed.append(plan.spec.name)
            print(f"{plan.spec.name}: trained; its analyses (about "
                  f"{analyses_left(per_run[plan.spec.config.inference], plan.run_dir, wall=True):.1f} h) no longer fit "
                  f"in --hours: left for the next call", file=sys.stderr)
        elif args.commit and not args.train_only:
            commit_with_reports([results], f"study: {plan.spec.name} "
                                           f"({what_was_done(results, old_metrics.get(plan.spec.name))})", args.results)

    # a re-analysis' local gaps.json is gone by now: hours_needed counts its analyses and no training
    wall = {r.spec.name: hours_needed(r, args.work, per_run, analyses=not args.train_only, wall=True) for r in todo}
    training = {r.spec.name: hours_needed(r, args.work, per_run, analyses=False) > 0 for r in todo}
    plans = [Plan(r.spec, args.work / r.spec.name, REANALYSE if r in again else action(args.work, r.spec.name))
             for r in todo]
    admit = admission(plans, wall, training, deadline)
    if all(admit(plan, quiet=True) for plan in plans):      # nothing fits: no Ray instance for nothing
        print(f"no run fits in --hours {args.hours}: the shortest needs about {min(wall.values()):.1f} h")
        return 0
    records = run_on_ray(plans, args, "study", study_task, task_args, on_record, admit)
    failed = [name for name, r in records.items() if r["status"] == FAILED]
    waiting = sum(r["status"] == NOT_STARTED for r in records.values())
    ended = len(records) - len(failed) - waiting - len(unanalysed) - len(stopped)
    print(f"{ended} runs {'trained' if args.train_only else 'finished'}, "
          f"{len(failed)} failed" + (f": {', '.join(failed)} (logs in {failed_logs})" if failed else "")
          + (f", {len(stopped)} stopped training at the end of --hours" if stopped else "")
          + (f", {len(unanalysed)} trained but not analysed (--hours)" if unanalysed else "")
          + (f", {waiting} not started (--hours)" if waiting else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
