"""The performance targets of issue 5, each measured on this machine and printed beside its target.

All timed entries run interleaved round-robin in one process (so that load changes on a shared
machine hit them alike) and every target is a ratio taken within the run:
  1. CEM decision at PlaNet sizes (RSSM 200/30/200, horizon 12, 1000 candidates, 10 iterations, top 100):
     achieved GFLOP/s over the GFLOP/s of the decision's own matmuls (every Linear of one imagined
     step, at 1000 rows, without anything else) timed in the same rounds.      target >= 0.8
  2. Training step at PlaNet sizes (amortized, batch 50 x 50, 5-d state observations, Adam, free nats):
     ms per step, and its FLOPs (torch's counter, forward + backward) as GFLOP/s over a 2048^3 matmul.
                                                                               target <= 190 ms
     The same in units of the machine's own 2048^3 matmul rate (step time x GFLOP/s), against 190 ms on
     the issue's reference CPU, whose 2048^3 matmul runs at 183 GFLOP/s.       target <= 34.8 GFLOP
  Targets 1 and 2 also time the step-by-step loops (`plain_loops`) to show what the fused ones buy. (Target 1
  was met with C kernels for the loop's elementwise steps, 0.83-0.85; they were removed when they no longer paid
  10% of the agent's episodes per core-hour, docs/throughput, and the fused loop alone gives 0.74-0.78.)
  3. One semi-amortized refinement step (ELBO forward + backward wrt the offsets + update) over one
     amortized training step on the same batch.                               target <= 1.0
     Per-sequence inference: ms per optimizer step and steps until its stopping rule fires.
  4. A decision with refinement at the agent's default sizes (belief update with K = 3 steps over the
     last 8 steps, then the `cpu` CEM) over the amortized agent's decision.    target <= 1.5
  5. Equal wall-clock planner comparison: agent runs, not a microbenchmark (see README, Performance).
  6. Replay bytes per pixel step in memory and on disk (a real cartpole pixel episode), and after
     reloading it as a resumed run does, stored as the agent stores them (compressed files).
                                                                               target <= 12.3 kB

    PYTHONPATH=. python benchmarks/bench_targets.py [--threads 1] [--repeats 10] [--json out.json]
    PYTHONPATH=. python benchmarks/bench_targets.py --quick     # tiny sizes: a smoke test, not a measurement
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from agent.config import AgentConfig
from agent.loop import Agent
from agent.replay import training_replay
from benchmarks.bench_agent import cem_entry, fill_replay, machine_info, rssm_step_flops, run_rounds
from benchmarks.bench_inference import make_batch, matmul_entry, refinement_entries, training_step_entry
from benchmarks.bench_inference import parse_args as inference_args
import planners.objectives as objectives
import world_models.rollout as rollout_module
from world_models.base import ModelState
from world_models.posteriors import POSTERIORS, make_posterior
from world_models.posteriors.registry import FILTER, Q_STAR, REFINED
from world_models.rssm import RSSM

TARGETS = {"cem_ratio": 0.8, "train_ms": 190.0, "refine_ratio": 1.0, "decision_ratio": 1.5, "pixel_kB": 12.3}
TARGET4 = (REFINED, Q_STAR)   # the posteriors whose decisions target 4 times with 3 refinement steps
# The reference CPU (2 cores, AVX2 + FMA): a 2048^3 fp32 matmul at about 183 GFLOP/s. Target 2 in units
# of the machine's own matmul: step time x 2048^3 GFLOP/s <= 190 ms x 183 GFLOP/s = 34.8 GFLOP.
REFERENCE_MATMUL_GFLOPS = 183.0


@contextmanager
def plain_loops():
    """Inside: the step-by-step rollout and imagination loops instead of the fused ones
    (world_models/fused_filter.py, fused_imagine.py), to time what the fused loops buy."""
    saved = rollout_module.fast_loop, objectives.supported
    rollout_module.fast_loop, objectives.supported = (lambda *args: None), (lambda *args: False)
    try:
        yield
    finally:
        rollout_module.fast_loop, objectives.supported = saved


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=10, help="timed rounds (medians reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per entry first")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the agent's default is 1)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds: a smoke test of the script")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if args.quick:
        args.repeats, args.warmup = min(args.repeats, 2), min(args.warmup, 1)
    return args


def sizes(quick: bool) -> dict:
    """The model and batch sizes of targets 1-3 (PlaNet's) and the CEM settings of target 1."""
    if quick:
        return dict(deter_dim=16, z_dim=4, hidden=16, batch=4, length=10, obs_dim=5, action_dim=1,
                    cem=dict(horizon=3, candidates=40, iterations=2, top_k=4), matmul_size=128)
    return dict(deter_dim=200, z_dim=30, hidden=200, batch=50, length=50, obs_dim=5, action_dim=1,
                cem={}, matmul_size=2048)


# --- 1. CEM against its own matmuls ---------------------------------------------------------------------
def step_linear_shapes(model: RSSM) -> list[tuple[int, int]]:
    """(in, out) of every matmul of one imagined step: embedding, the GRU's two, prior and reward MLPs."""
    shapes = [(m.in_features, m.out_features) for part in (model.embed_za, model.prior_net, model.reward_net)
              for m in part if isinstance(m, nn.Linear)]
    g = model.gru
    return shapes + [(g.input_size, 3 * g.hidden_size), (g.hidden_size, 3 * g.hidden_size)]


def decision_matmuls_entry(shapes, rows: int, horizon: int, seed: int) -> Callable[[], None]:
    """One CEM iteration's matmuls: every step's Linear shapes at `rows` rows, horizon times."""
    g = torch.Generator().manual_seed(seed)
    pairs = [(torch.randn(rows, i, generator=g), torch.randn(o, i, generator=g)) for i, o in shapes]

    def run():
        for _ in range(horizon):
            for x, w in pairs:
                torch.mm(x, w.t())
    return run


# --- 2. training FLOPs -----------------------------------------------------------------------------------
def counted_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


# --- 3. per-sequence convergence -------------------------------------------------------------------------
def per_sequence_convergence(model: RSSM, batch, window: int, patience: int, max_steps: int) -> dict:
    post = make_posterior(Q_STAR, model, n_samples=1, window=window, patience=patience, max_steps=max_steps,
                          lr=0.05)
    t0 = time.perf_counter()
    _, report = post.optimize(model, batch)
    seconds = time.perf_counter() - t0      # includes the final start-versus-result comparison
    return {"steps": report.steps, "seconds": seconds, "ms_per_step": 1e3 * seconds / max(report.steps, 1),
            "stopped_by": report.stopped_by, "elbo_per_step_trace": report.trace}


# --- 4. decisions of the agent ---------------------------------------------------------------------------
def decision_entry(cfg: AgentConfig, run_dir: str, warm_steps: int, seed: int) -> Callable[[], None]:
    """One agent decision (Agent.decide: belief update + CEM) after `warm_steps` random-action steps of an
    episode; each call takes the next step of the episode (a new one every 100 steps)."""
    agent = Agent(cfg, run_dir)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    state: dict = {}

    def reset():
        obs, info = agent.env.reset(seed=int(rng.integers(1 << 30)))
        agent.belief.reset()
        state.update(obs=obs, info=info, steps=0, prev=torch.zeros(agent.action_dim))

    def step(timed_decision: bool):
        valid = state["info"].get("obs_valid", True)
        if timed_decision:
            action = agent.decide(state["obs"], state["prev"], valid, gen)
        else:
            agent.belief.update(agent._obs_tensor(state["obs"]), state["prev"], valid)
            action = rng.uniform(-1, 1, agent.action_dim).astype(np.float32)
        state["obs"], _, term, trunc, state["info"] = agent.env.step(action)
        state["prev"] = torch.as_tensor(action, dtype=torch.float32)
        state["steps"] += 1
        if term or trunc or state["steps"] >= 100:
            reset()

    reset()
    for _ in range(warm_steps):
        step(False)
    return lambda: step(True)


# --- 6. replay bytes -------------------------------------------------------------------------------------
def pixel_replay_bytes(agent_steps: int, seed: int, physics_state: bool) -> dict:
    """Two random-action cartpole episodes with pixel observations (at most agent_steps steps each) into a
    Replay on disk; bytes per stored step in memory, on disk, and in memory again after reloading the
    directory (what --resume does). physics_state: as the agent's --physics-state."""
    with tempfile.TemporaryDirectory(prefix="bench_targets_pixels_") as d:
        replay = training_replay(d, "pixels")                       # as the agent keeps pixel episodes
        fill_replay(replay, "cartpole_swingup", None, 2, seed, obs_type="pixels", max_steps=agent_steps,
                    physics_state=physics_state)
        steps = sum(len(e["obs"]) for e in replay.episodes)
        nbytes = lambda r: sum(a.nbytes for e in r.episodes for a in e.values())
        disk = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        return {"steps": steps, "memory": nbytes(replay) / steps, "disk": disk / steps,
                "reloaded": nbytes(training_replay(d, "pixels")) / steps,
                "by_array": {k: v.nbytes / len(v) for k, v in replay.episodes[0].items()}}


# --- the run ---------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    z = sizes(args.quick)
    info = machine_info()
    nets = inference_args([])                        # bench_inference's defaults (Adam, free nats, clip, ...)
    for key in ("deter_dim", "z_dim", "hidden", "batch", "length", "obs_dim", "action_dim"):
        setattr(nets, key, z[key])
    nets.seed, cpu = args.seed, torch.device("cpu")
    batch = make_batch(nets, cpu)

    torch.manual_seed(args.seed)
    model = RSSM((z["obs_dim"],), z["action_dim"], z["deter_dim"], z["z_dim"], z["hidden"]).eval()
    g = torch.Generator().manual_seed(args.seed)
    belief = ModelState(torch.randn(1, z["deter_dim"], generator=g), torch.randn(1, z["z_dim"], generator=g))
    planner, decide = cem_entry(model, belief, "planet", z["cem"], args.seed)
    with plain_loops():
        _, decide_plain = cem_entry(model, belief, "planet", z["cem"], args.seed)
    cem = planner.settings
    shapes = step_linear_shapes(model)
    step_flops = rssm_step_flops(z["z_dim"], z["action_dim"], z["deter_dim"], z["hidden"])
    assert sum(2 * i * o for i, o in shapes) == step_flops, "step_linear_shapes and rssm_step_flops disagree"

    train_step = training_step_entry(nets, cpu, batch, FILTER)
    train_plain = training_step_entry(nets, cpu, batch, FILTER)

    def train_step_plain():
        with plain_loops():
            train_plain()
    train_flops = counted_flops(training_step_entry(nets, cpu, batch, FILTER))
    entries: dict[str, Callable] = {
        "cem planet": decide,
        "cem planet, plain loop": decide_plain,
        "cem matmuls": decision_matmuls_entry(shapes, cem.candidates, cem.horizon, args.seed),
        "train amortized": train_step,
        "train amortized, plain loop": train_step_plain,
        f"matmul {z['matmul_size']}": matmul_entry(z["matmul_size"], cpu),
        **refinement_entries(nets, cpu, batch)}
    run_dirs = tempfile.TemporaryDirectory(prefix="bench_targets_agents_")
    small = dict(deter=16, stoch=4, hidden=16, horizon=2) if args.quick else {}
    for name in POSTERIORS:      # target 4 refines 3 steps per decision; the others decide at their defaults
        extra = {"decision_refine_steps": 3} if name in TARGET4 else {}
        cfg = AgentConfig(inference=name, seed=args.seed, wandb="disabled", **extra, **small)
        entries[f"decision {name}"] = decision_entry(cfg, os.path.join(run_dirs.name, name), cfg.decision_window + 2,
                                                     args.seed)

    print(f"torch {info['torch']}, threads {torch.get_num_threads()}, {info['cpus']} CPUs, {info['platform']}"
          + ("" if info["loadavg_start"] is None else f", load average {info['loadavg_start'][0]:.2f} at start"))
    if args.quick:
        print("QUICK MODE: tiny sizes, 2 rounds; a smoke test, not a measurement.")
    print(f"{len(entries)} entries, warmup {args.warmup}, {args.repeats} rounds ...", flush=True)
    t0 = time.perf_counter()
    times, _ = run_rounds(entries, args.repeats, args.warmup)
    conv = per_sequence_convergence(model.train(), make_batch(
        argparse.Namespace(**{**vars(nets), "batch": min(nets.batch, 8)}), cpu),
        window=10 if args.quick else 20, patience=2 if args.quick else 5, max_steps=40 if args.quick else 3000)
    try:
        replay = {keep: pixel_replay_bytes(5 if args.quick else 10**6, args.seed, keep) for keep in (True, False)}
    except Exception as e:   # no EGL / OSMesa to render pixels with: report it, keep the rest
        replay = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:200]}
    total_s = time.perf_counter() - t0
    run_dirs.cleanup()

    med = {n: statistics.median(ts) for n, ts in times.items()}
    paired = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))
    dec_flops = step_flops * cem.candidates * cem.horizon * cem.iterations
    mm_flops = step_flops * cem.candidates * cem.horizon
    cem_gflops, mm_gflops = dec_flops / med["cem planet"] / 1e9, mm_flops / med["cem matmuls"] / 1e9
    matmul_ratio = lambda name: statistics.median((dec_flops / a) / (mm_flops / b)
                                                  for a, b in zip(times[name], times["cem matmuls"]))
    cem_ratio = matmul_ratio("cem planet")
    big = f"matmul {z['matmul_size']}"
    big_gflops = 2 * z["matmul_size"] ** 3 / med[big] / 1e9
    train_ms = 1e3 * med["train amortized"]
    train_matmul_units = statistics.median(t * 2 * z["matmul_size"] ** 3 / m / 1e9
                                           for t, m in zip(times["train amortized"], times[big]))
    refine_step = [a - b for a, b in zip(times["refine(steps=1)"], times["refine(steps=0)"])]
    refine_ratio = statistics.median(r / t for r, t in zip(refine_step, times["train amortized"]))
    dec = {n: 1e3 * med[f"decision {n}"] for n in POSTERIORS}
    dec_ratio = {n: paired(f"decision {n}", f"decision {FILTER}") for n in POSTERIORS}

    rows = [
        ("1 CEM decision, PlaNet sizes (GFLOP/s / its matmuls' GFLOP/s)", cem_ratio, f">= {TARGETS['cem_ratio']}",
         cem_ratio >= TARGETS["cem_ratio"],
         f"{1e3 * med['cem planet']:.0f} ms/decision, {dec_flops / 1e9:.1f} GFLOP, {cem_gflops:.1f} GFLOP/s; "
         f"its matmuls alone {mm_gflops:.1f} GFLOP/s; the plain loop takes {paired('cem planet, plain loop', 'cem planet'):.2f}x"),
        ("2 training step, PlaNet sizes, amortized (ms)", train_ms, f"<= {TARGETS['train_ms']:.0f}",
         train_ms <= TARGETS["train_ms"],
         f"{train_flops / 1e9:.2f} GFLOP counted, {train_flops / med['train amortized'] / 1e9:.1f} GFLOP/s = "
         f"{train_flops / med['train amortized'] / 1e9 / big_gflops:.2f} x matmul {z['matmul_size']}^3 "
         f"({big_gflops:.0f} GFLOP/s); 573 ms reference = {573 / train_ms:.2f} x this; the plain loop takes "
         f"{paired('train amortized, plain loop', 'train amortized'):.2f}x"),
        ("2 training step x this machine's matmul rate (GFLOP)", train_matmul_units,
         f"<= {190 * REFERENCE_MATMUL_GFLOPS / 1e3:.1f}", train_matmul_units <= 190 * REFERENCE_MATMUL_GFLOPS / 1e3,
         f"190 ms on the reference CPU (2048^3 at {REFERENCE_MATMUL_GFLOPS:.0f} GFLOP/s) in this machine's own units"),
        ("3 semi-amortized refinement step / amortized training step", refine_ratio, f"<= {TARGETS['refine_ratio']}",
         refine_ratio <= TARGETS["refine_ratio"],
         f"{1e3 * statistics.median(refine_step):.0f} ms per step; per_sequence: {conv['ms_per_step']:.0f} ms per "
         f"optimizer step ({min(nets.batch, 8)} sequences), {conv['steps']} steps until {conv['stopped_by']}"),
        *[(f"4 decision with refinement / amortized decision, {n}", dec_ratio[n], f"<= {TARGETS['decision_ratio']}",
           dec_ratio[n] <= TARGETS["decision_ratio"],
           f"{dec[n]:.0f} vs {dec[FILTER]:.0f} ms (K = 3 over 8 steps, cpu CEM, agent sizes); "
           + ", ".join(f"{m} {dec[m]:.0f} ms" for m in POSTERIORS if m not in TARGET4 and m != FILTER)
           + " at their defaults") for n in TARGET4]]
    if "error" in replay:
        print(f"6 replay bytes: unavailable ({replay['error']})")
    else:
        kb = TARGETS["pixel_kB"]
        for keep, r in replay.items():
            which = "with the physical state (default)" if keep else "--physics-state 0"
            rows += [(f"6 replay, pixel step (kB = 1000 B), {which}: memory", r["memory"] / 1e3, f"<= {kb}",
                      r["memory"] / 1e3 <= kb, ", ".join(f"{k} {v:.0f} B" for k, v in r["by_array"].items())),
                     (f"6 replay, pixel step, {which}: on disk", r["disk"] / 1e3, f"<= {kb}", r["disk"] / 1e3 <= kb,
                      f"{r['steps']} steps in 2 npz files"),
                     (f"6 replay, pixel step, {which}: in memory after reloading (resume)", r["reloaded"] / 1e3,
                      f"<= {kb}", r["reloaded"] / 1e3 <= kb, "")]
    w = max(len(r[0]) for r in rows)
    print()
    print(f"{'target':<{w}}  {'measured':>9}  {'target':>8}  {'met':>4}  details")
    for name, value, target, met, details in rows:
        print(f"{name:<{w}}  {value:>9.3f}  {target:>8}  {'yes' if met else 'NO':>4}  {details}")
    print("5 equal wall-clock planner comparison: from agent runs (README, Performance)")
    print(f"medians over {args.repeats} rounds; ratios are medians of per-round ratios; total {total_s:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "sizes": z, "targets": TARGETS, "cem_settings": vars(cem) if hasattr(cem, "__dict__")
                       else str(cem), "train_flops": train_flops, "per_sequence": conv, "replay": replay,
                       "rows": [dict(zip(("name", "value", "target", "met", "details"), r)) for r in rows],
                       "raw_times_s": times}, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
