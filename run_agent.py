"""Train a PlaNet-style agent whose world model uses a swappable posterior, planning with iCEM (or --planner cem,
random_shooting).

    python run_agent.py --env cartpole --inference semi_amortized

A run directory (default runs/<env>-<inference>-s<seed>) holds config.json, metrics.jsonl (one line
per episode), checkpoint.pt (atomic, after every episode), episodes/ (the replay, one file per
episode) and learning_curve.png. Stop it at any time; `--resume` continues from the last checkpoint.
`--minutes M` stops it by itself after M minutes, at a checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from agent.config import DEVICES, PLANNER_PRESETS, PROFILES, WANDB_MODES, AgentConfig, flag, profile_config
from envs.registry import DMC_TASKS, GYM_TASKS, OBS_TYPES, describe_aliases
from planners.factory import PLANNERS
from world_models.posteriors import POSTERIORS

HELP = {
    "env": "task: " + ", ".join([*DMC_TASKS, *GYM_TASKS]) + "; short names: " + describe_aliases(),
    "obs": "observation type: " + ", ".join(OBS_TYPES),
    "inference": "posterior: " + ", ".join(POSTERIORS),
    "seed": "random seed (same seed, same returns on the CPU)",
    "episodes": "episodes to collect in all, seed episodes included",
    "seed_episodes": "random-action episodes before the first model update",
    "train_steps": "model updates per collected episode",
    "batch_size": "sequences per model update",
    "seq_len": "steps per training sequence",
    "deter": "RSSM GRU size", "stoch": "RSSM stochastic latent size", "hidden": "RSSM hidden layer size",
    "free_nats": "free nats of KL per step",
    "obs_std": "std of the observation model: 0 learns one per observation dimension, > 0 fixes it (PlaNet: 1)", "lr": "Adam learning rate", "adam_eps": "Adam epsilon",
    "grad_clip": "gradient norm clip",
    "explore_noise": "std of Gaussian noise on planned actions while collecting",
    "eval_every": "one evaluation episode (no noise) every this many episodes",
    "eval_episodes": "evaluation episodes at every --eval-episodes-every-th episode and after the last (at most 10; "
                     "metrics.jsonl: eval_return is their mean, eval_return_se its standard error, eval_returns each)",
    "eval_episodes_every": "see --eval-episodes",
    "planner": "planner: " + ", ".join(PLANNERS) + " (icem: CEM with colored noise, kept and shifted elites, a "
               "decaying population and warm starts; Pinneri et al. 2020)",
    "planner_preset": "planner size: " + ", ".join(PLANNER_PRESETS) + " (cem cpu: 300 candidates x 5 iterations, "
                      "planet: 1000 x 10; icem cpu: 180 decaying by 1.25 over 3 iterations, small: 90 over 3, planet: 1000 "
                      "over 4)",
    "horizon": "planning horizon (default: the preset's, 12)",
    "refine_steps": "semi_amortized: refinement steps K in training; per_sequence: warm-started steps per update",
    "refine_lr": "refinement step size (Adam)",
    "refine_every": "semi_amortized, iterative_amortized: refine (run the learned update) on the 1st, (k+1)-th, ... "
                    "model update after each episode only, amortized updates between (1: every update)",
    "decision_refine_steps": "refinement steps at each decision, for posteriors with local parameters to refine "
                             "(default: the posterior's own: 0 where it has an encoder, 20 for per_sequence, K for "
                             "iterative_amortized's learned update)",
    "decision_refine_lr": "step size (Adam) of the refinement at each decision (default: the posterior's own: 0.1 "
                          "for per_sequence, --refine-lr for the others)",
    "decision_window": "recent steps re-inferred at each decision",
    "action_repeat": "env steps per action (default: PlaNet's per task)",
    "missing_every": "keep only every k-th observation (missing-observation variant; default: every one kept)",
    "missing_prob": "drop each observation with this probability (default: none dropped)",
    "obs_noise": "std of Gaussian observation noise", "action_noise": "std of Gaussian noise added to actions in the env",
    "device": "compute device: " + ", ".join(DEVICES),
    "physics_state": "1: store the environment's true physical state per step in the replay's files (not in "
                     "memory), for the calibration read-out of analysis.uncertainty (16 bytes per step on cartpole "
                     "before compression); 0: leave it out",
    "wandb": "wandb mode: " + ", ".join(WANDB_MODES) + " (offline needs no network; `wandb sync` uploads later)",
}


class UsageError(Exception):
    pass


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = AgentConfig()
    for f in fields(AgentConfig):
        default = getattr(defaults, f.name)
        kind = {bool: int}.get(type(default), type(default)) if default is not None else (
            float if f.name == "missing_prob" else int)
        shown = "" if default is None else f" (default: {int(default) if kind is int else default})"  # None: HELP says
        p.add_argument(flag(f.name), type=kind, default=None, help=HELP[f.name] + shown)
    p.add_argument("--profile", default="default", choices=list(PROFILES), metavar="NAME",
                   help="a named set of defaults, overridden by the settings given: " + "; ".join(
                       f"{k}: {', '.join(f'{flag(n)} {v}' for n, v in d.items()) or 'the defaults above'}"
                       for k, d in PROFILES.items()) + " (v1: the defaults before the throughput work; fast: 3x v1's "
                       "episodes per core-hour at a lower return, docs/throughput; for new runs: a resumed run keeps "
                       "its settings)")
    p.add_argument("--run-dir", type=Path, default=None, help="run directory (default: runs/<env>-<inference>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint; only "
                   + ", ".join(map(flag, RESUME_SAFE)) + " may differ from the run's settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a small shared CPU, one thread per run is fastest)")
    p.add_argument("--wandb-group", default=None, help="wandb group of the run (default: <env>-<inference>)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock minutes this call may take: an episode starts only where it is expected to end "
                        "within them (as long as the last one, plus its evaluation episodes at the last one's "
                        "seconds each), else the run stops at its checkpoint (exit code 0) and `--resume` continues "
                        "it (default: no limit)")
    return p.parse_args(argv)


# Settings that a resumed run may change: how far it goes and where wandb logs; each change is recorded in
# the run's resume_log.jsonl. Every other setting given with --resume must equal the stored one.
RESUME_SAFE = ("episodes", "wandb")


def make_config(args) -> tuple[AgentConfig, Path, dict]:
    """The run's config and directory, and {setting: [stored, given]} for what a resume changes."""
    given = {f.name: getattr(args, f.name) for f in fields(AgentConfig) if getattr(args, f.name) is not None}
    run_dir = args.run_dir
    if run_dir is not None and run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir} is a file, not a directory")
    if args.resume:
        if args.profile != "default":
            raise UsageError(f"--profile {args.profile} sets a new run's defaults; a resumed run keeps its own "
                             f"settings (leave out --profile with --resume)")
        if run_dir is None:
            raise UsageError("--resume needs --run-dir (the run to continue)")
        config_path = run_dir / "config.json"
        if not config_path.exists():
            raise UsageError(f"--resume: {run_dir} is not a run directory (no config.json)")
        stored = asdict(AgentConfig.load(config_path))
        conflicts = [f"{flag(k)} {v} was given, the run has {stored[k]}" for k, v in given.items()
                     if k not in RESUME_SAFE and v != stored[k]]
        if conflicts:
            raise UsageError(f"--resume keeps the run's settings: {'; '.join(conflicts)}; only "
                             f"{', '.join(map(flag, RESUME_SAFE))} may change (for other settings start a new run "
                             f"with another --run-dir)")
        changes = {k: [stored[k], given[k]] for k in RESUME_SAFE if k in given and given[k] != stored[k]}
        return AgentConfig(**{**stored, **given}), run_dir, changes
    cfg = profile_config(args.profile, **given)
    run_dir = run_dir or Path("runs") / f"{cfg.env}-{cfg.inference}-s{cfg.seed}"
    if run_dir.exists() and any(p.name != "log.txt" for p in run_dir.iterdir()):   # a launcher's log may be there
        raise UsageError(f"run directory {run_dir} already holds a run; use --resume to continue it or "
                         f"choose another --run-dir")
    return cfg, run_dir, {}


def main(argv=None) -> int:
    args = parse_args(argv)
    # --minutes count from here: starting up (imports, the replay, wandb) is part of them
    deadline = None if args.minutes is None else (time.monotonic() + 60 * args.minutes, args.minutes)
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        if args.minutes is not None and not args.minutes >= 0:
            raise UsageError(f"--minutes must be >= 0, got {args.minutes}")
        cfg, run_dir, changes = make_config(args)
        import torch

        from agent.loop import Agent
        torch.set_num_threads(args.threads)
        agent = Agent(cfg, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(run_dir, os.W_OK):
            raise UsageError(f"run directory {run_dir} is not writable")
    except (UsageError, ValueError, ImportError) as e:
        print(f"run_agent.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"run_agent.py: error: cannot create run directory {run_dir}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        agent.restore()
        if cfg.episodes < agent.episode:
            raise ValueError(f"--episodes {cfg.episodes} is fewer than the {agent.episode} the run has done")
    except (ValueError, RuntimeError) as e:
        print(f"run_agent.py: error: cannot resume {run_dir}: {e}", file=sys.stderr)
        return 2
    cfg.save(run_dir / "config.json")
    for warning in cfg.warnings():
        print(f"run_agent.py: warning: {warning}", file=sys.stderr)
    if args.resume:
        record_resume(run_dir, agent.episode, changes)
    return run(agent, cfg, run_dir, progress=not args.no_progress,
               wandb_group=args.wandb_group or f"{cfg.env}-{cfg.inference}", deadline=deadline)


def record_resume(run_dir: Path, episode: int, changes: dict) -> None:
    """One line per resume in resume_log.jsonl: when, from which episode, and what it changed."""
    with open(run_dir / "resume_log.jsonl", "a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_episode": episode,
                            "changed": changes}) + "\n")


def next_episode_seconds(history: list[dict], cfg: AgentConfig) -> float:
    """Expected wall-clock seconds of the episode after `history` (metrics.jsonl rows): the last one's training and
    collecting, plus its evaluation episodes (cfg.eval_episodes_after; ten at episodes 50 and 100 by default) at the
    last measured seconds per evaluation episode; 0 without history."""
    if not history:
        return 0.0
    evals = [row for row in history if row.get("eval_episodes")]
    per_eval = evals[-1]["eval_seconds"] / evals[-1]["eval_episodes"] if evals else 0.0
    last = history[-1]
    return (last.get("train_seconds", 0.0) + last.get("collect_seconds", 0.0)
            + cfg.eval_episodes_after(len(history) + 1) * per_eval)


def run(agent, cfg: AgentConfig, run_dir: Path, progress: bool, wandb_group: str,
        deadline: tuple[float, float] | None = None) -> int:
    """Train until cfg.episodes, or until the next episode (next_episode_seconds) would end after `deadline`:
    (time.monotonic() seconds, the --minutes it stands for)."""
    import wandb

    from agent.progress import ProgressLine
    from agent.report import read_metrics

    wb = wandb.init(project="amortization-gap", dir=str(run_dir), mode=cfg.wandb, config=asdict(cfg),
                    group=wandb_group, name=run_dir.name, id=_wandb_id(run_dir), resume="allow")
    history = read_metrics(run_dir)
    line = ProgressLine(cfg, agent.episode, agent.env_steps, enabled=progress, history=history)
    agent.on_progress = line.phase
    try:
        while agent.episode < cfg.episodes:
            if deadline is not None and time.monotonic() + next_episode_seconds(history, cfg) >= deadline[0]:
                print(f"stopped at episode {agent.episode} of {cfg.episodes}: another would end after --minutes "
                      f"{deadline[1]:g}; the checkpoint holds every episode so far (continue with --resume --run-dir "
                      f"{run_dir})")
                return 0
            record = agent.step()
            history.append(record)
            wb.log({k: v for k, v in record.items() if not isinstance(v, list)}, step=record["env_steps"])
            line.episode_done(record)
    except FloatingPointError as e:   # a non-finite loss or gradient (training), or NaN returns (planning)
        print(f"run_agent.py: stopped in episode {agent.episode + 1}: {e}; the run keeps its last good checkpoint, "
              f"from episode {agent.episode} ({agent.checkpoint_path})", file=sys.stderr)
        return 1
    finally:
        line.close()
        wb.finish()
    print(f"done: {agent.episode} episodes, {agent.env_steps} env steps; results in {run_dir}")
    return 0


def _wandb_id(run_dir: Path) -> str:
    """A wandb run id kept in the run directory, so a resumed run logs to the same wandb run."""
    path = run_dir / "wandb_id"
    if not path.exists():
        import uuid
        path.write_text(uuid.uuid4().hex[:12])
    return path.read_text().strip()


if __name__ == "__main__":
    sys.exit(main())
