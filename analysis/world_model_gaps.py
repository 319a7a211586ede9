"""Gap decomposition of a trained agent's world model (docs/definitions.md section 2).

    python -m analysis.world_model_gaps runs/cartpole-amortized-s0

Freezes the run's model at its last checkpoint and, on windows of held-out episodes (collected by
the trained agent, cached in RUN_DIR/analysis/) and of training episodes (the run's replay), reports
the inference, approximation, amortization and conditioning gaps of the run's own posterior and of fresh
filter and smoother encoders fitted to the frozen model on the training replay. Each amortization gap is
against a q* in that posterior's own family (structured through h_t: free per-step offsets optimized from its
output, best iterate kept); a mean-field q* is a further family. log p(x) by AIS from the tightest q*, with
SMC-N and IWAE-K beside it; every ELBO is checked against it, and a BDMC sandwich on sequences simulated from
the model says how far it can be trusted. Also the amortization gap after K = 0, 1, 5, 20, 100 refinement
steps, against K and wall-clock. Writes RUN_DIR/analysis/gaps.json, gaps.md, gaps.png and refinement.png (or
to --out). Nothing else in the run directory changes.

While it runs, each finished piece (encoder fits, q* fits, log p(x) estimators, BDMC) is kept in
OUT/gaps-pieces/: a call killed part way, run again with the same settings on the same checkpoint and episodes,
resumes from those pieces and gives the same numbers (gaps.json's resumed_pieces lists them); the folder is removed
once gaps.json is written.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch


from .decompose import add_gap_arguments, check_gap_arguments, decompose, gap_settings_from
from .gap_report import (bdmc_lines, curve_table, encoder_fit_table, gap_table, log_px_lines, plot_gap_bars,
                         plot_refinement)
from .cli import command_main, out_dir, parse_with_quick, parser
from .run_loading import HELDOUT_POLICIES, heldout_replay, load_run, windows, write_report
from .workers import PieceStore, cpu_seconds

SPLITS = ("heldout", "train")
PIECES = "gaps-pieces"      # OUT/PIECES: the finished pieces of a call that has not written gaps.json yet
NOT_OPTIONS = ("exact_log_px",)   # world models have no exact log p(x)


QUICK = {"heldout_episodes": 2, "sequences": 4, "length": 30, "encoder_windows": 200, "eval_samples": 100,
         "q_star_max_steps": 300, "encoder_steps": 150, "curve_steps": [0, 1, 5, 20], "curve_samples": 4,
         "ais_steps": 100, "ais_chains": 8, "bdmc_sequences": 2}


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("run_dir", type=Path, help="an agent run directory (run_agent.py --run-dir)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/analysis)")
    p.add_argument("--heldout-episodes", type=int, default=4, help="held-out episodes to collect (or reuse)")
    p.add_argument("--heldout-policy", default="eval", choices=HELDOUT_POLICIES,
                   help="how held-out episodes are collected: eval = planner without noise")
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                   help="where to decompose: windows of held-out episodes and/or of the training replay (default both; "
                        "each split costs about as much as the other)")
    p.add_argument("--sequences", type=int, default=16, help="windows per split (held-out, train)")
    p.add_argument("--length", type=int, default=50, help="steps per window")
    p.add_argument("--encoder-windows", type=int, default=1000,
                   help="training-replay windows the fresh filter/smoother encoders are fitted on")
    add_gap_arguments(p, exclude=NOT_OPTIONS)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parse_with_quick(p, argv, QUICK, positive=(
        "heldout_episodes", "sequences", "length", "encoder_windows", "eval_samples", "q_star_samples",
        "q_star_max_steps", "encoder_steps", "encoder_batch_size", "curve_samples", "threads", "ais_chains",
        "ais_leapfrog"))
    check_gap_arguments(p, args)
    args.splits = list(dict.fromkeys(args.splits))
    return args


def run(args) -> dict:
    agent = load_run(args.run_dir, args.threads)
    cfg = agent.cfg
    settings = gap_settings_from(args, NOT_OPTIONS)
    held = heldout_replay(agent, args.heldout_episodes, args.heldout_policy)
    length = min(args.length, min(len(e["reward"]) for e in held.episodes + agent.replay.episodes))
    sources = {"heldout": (held, args.seed), "train": (agent.replay, args.seed + 1)}
    # the gaps are of log p(x): their rollouts need no reward head (the fresh encoders fit the agent's objective,
    # rewards included, on encoder_data); the same numbers, bit for bit (tests/test_ais.py), at 8% fewer FLOPs per
    # AIS step (docs/definitions.md)
    gap_sets = {split: replace(windows(sources[split][0], args.sequences, length, sources[split][1]), rewards=None)
                for split in args.splits}
    encoder_data = windows(agent.replay, args.encoder_windows, length, args.seed + 2)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    own = agent.posterior if agent.posterior.has_encoder else None      # without one, its posterior is q*
    # the pieces depend on the checkpoint, the windows and the settings (not on the number of workers)
    store = PieceStore(out_dir(args) / PIECES, {
        "checkpoint_sha256": hashlib.sha256(agent.checkpoint_path.read_bytes()).hexdigest(),
        "windows_sha256": fingerprint([*gap_sets.values(), encoder_data]),
        "settings": {k: v for k, v in asdict(settings).items() if k != "workers"}})
    gaps = decompose(agent.model, cfg.inference, own, gap_sets, encoder_data, settings, curve_split=args.splits[0],
                     label=f"{args.run_dir.name}", store=store)
    return {"run_dir": str(args.run_dir), "checkpoint_episode": agent.episode, "env_steps": agent.env_steps,
            "inference": cfg.inference, "env": cfg.env, "config": asdict(cfg),
            "splits": list(args.splits),
            "settings": {**asdict(settings), "heldout_episodes": args.heldout_episodes,
                         "heldout_policy": args.heldout_policy, "sequences": args.sequences, "length": length,
                         "encoder_windows": args.encoder_windows},
            "seconds": time.perf_counter() - t0, "core_seconds": cpu_seconds() - cpu0,
            "machine": f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
            "bdmc": gaps.get("bdmc"), "resumed_pieces": gaps.get("resumed_pieces", {}),
            **{split: {**gaps[split], "estimator": gaps[split]["log_px_estimator"]["estimator"]} for split in args.splits}}


def fingerprint(batches) -> str:
    """sha256 of the batches' observations, actions, masks and rewards, in order."""
    h = hashlib.sha256()
    for b in batches:
        for t in (b.obs, b.actions, b.mask, b.rewards):
            h.update(b"-" if t is None else t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def splits_of(r: dict) -> list[str]:
    """The splits a gaps.json holds (files from before --splits hold both)."""
    return r.get("splits", list(SPLITS))


def markdown(r: dict) -> str:
    splits = splits_of(r)
    by_name = {r["inference"]: {s: r[s] for s in splits}}
    s = r["settings"]
    lines = [f"# Gaps of {Path(r['run_dir']).name} ({r['env']}, {r['inference']}, checkpoint after episode "
             f"{r['checkpoint_episode']}, {r['env_steps']} env steps)", "",
             f"{s['sequences']} windows of {s['length']} steps per split; held-out windows from {s['heldout_episodes']} "
             f"episodes collected with policy `{s['heldout_policy']}`; {s['eval_samples']} samples per ELBO, IWAE and "
             f"SMC estimate; fresh encoders fitted for {s['encoder_steps']} steps on {s['encoder_windows']} training "
             f"windows ({s.get('encoder_lr_schedule', 'constant')} step size); {r['seconds']:.0f} s on {r['machine']}"
             + (f", {s['workers']} worker processes ({r['core_seconds']:.0f} core-seconds)" if s.get("workers", 1) > 1
                else "")
             + (f"; {len(r['resumed_pieces'])} pieces resumed from an earlier call, which took "
                f"{sum(p['core_seconds'] for p in r['resumed_pieces'].values()):.0f} core-seconds for them"
                if r.get("resumed_pieces") else "") + ".", ""]
    for split in splits:
        lines += gap_table(by_name, split)
        lines += log_px_lines({r["inference"]: r[split]}, split)
    lines += bdmc_lines(r.get("bdmc"))
    lines += encoder_fit_table([(Path(r["run_dir"]).name, str(r["config"]["seed"]), r[splits[0]].get("encoder_fit"))])
    lines += curve_table(by_name, splits[0])
    return "\n".join(lines) + "\n"


def write(r: dict, out: Path) -> None:
    write_report(out, "gaps", r, markdown(r))
    splits = splits_of(r)
    by_name = {r["inference"]: {s: r[s] for s in splits}}
    title = f"{r['env']} {r['inference']}"
    plot_gap_bars(by_name, splits, out / "gaps.png", f"{title}: gap decomposition")
    plot_refinement(by_name, splits[0], out / "refinement.png", f"{title}: amortization gap vs refinement")
    shutil.rmtree(out / PIECES, ignore_errors=True)      # gaps.json holds what they were for


def main(argv=None) -> int:
    return command_main("world_model_gaps", parse_args(argv), run, write, markdown)


if __name__ == "__main__":
    sys.exit(main())
