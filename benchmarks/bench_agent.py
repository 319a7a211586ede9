"""Wall-clock cost of the agent's three loops on the CPU: planning, stepping the env, training the model.

Measures, in one run and interleaved round-robin (so that load changes on a shared machine hit
every entry alike):
  1. one CEM decision (planners.cem, scored by planners.objectives.imagined_return with sampled
     latents, as the agent plans) on the PlaNet-size RSSM (deter 200, z 30, hidden 200, 1 action,
     5-d vector observations), at the PlaNet preset (horizon 12, 1000 candidates, 10 iterations,
     top 100) and at the `cpu` preset (300 candidates, 5 iterations, top 30); also as achieved
     GFLOP/s (FLOPs counted analytically, see rssm_step_flops) next to an fp32 matmul of the GRU's
     shape, (candidates x deter) @ (deter x 3 deter), measured in the same rounds;
  2. env steps per second on cartpole swingup with state and with pixel observations: a fixed number
     of random-action agent steps per sample at the task's action repeat (8), counting env steps
     (episode resets, which happen every 1000 env steps, are inside the timed samples);
  3. model updates per second of the amortized posterior at the agent's defaults (agent/config.py:
     batch_size, seq_len, deter, stoch, hidden, free_nats, Adam lr and eps, grad clip), each update as
     Agent.train takes it: sample windows from a replay filled with random-action cartpole episodes,
     training_loss, backward, grad-norm clip, Adam step.

Times are medians over --repeats after --warmup. Run as a script:

    PYTHONPATH=. python benchmarks/bench_agent.py [--threads 1] [--repeats 30] [--json out.json]
    PYTHONPATH=. python benchmarks/bench_agent.py --quick       # tiny sizes: a smoke test of a few seconds
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from agent.config import AgentConfig
from agent.replay import EpisodeBuilder, Replay
from envs.registry import default_action_repeat, make_env, valid_env_names
from planners.factory import make_planner
from planners.objectives import imagined_return
from world_models.base import ModelState
from world_models.posteriors import Objective as TrainObjective
from world_models.posteriors import make_posterior
from world_models.posteriors.registry import FILTER
from world_models.rssm import RSSM
from world_models.training import make_adam

PRESETS = ("planet", "cpu")
# --quick: CEM settings per preset (tiny, but still 2 iterations so that the refit runs)
QUICK_CEM = {"planet": dict(horizon=3, candidates=40, iterations=2, top_k=4),
             "cpu": dict(horizon=3, candidates=12, iterations=2, top_k=2)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=30, help="timed samples per entry (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed samples per entry first")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: leave torch's default). On a shared, loaded machine "
                        "the default can make small ops far slower; try 1")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and 2 repeats: a smoke test of a few seconds, not a measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write all results (and raw times) as JSON here")
    g = p.add_argument_group("planning (1)")
    g.add_argument("--obs-dim", type=int, default=5)
    g.add_argument("--action-dim", type=int, default=1)
    g.add_argument("--deter-dim", type=int, default=200, help="GRU size of the planning RSSM")
    g.add_argument("--z-dim", type=int, default=30, help="stochastic size of the planning RSSM")
    g.add_argument("--hidden", type=int, default=200)
    g.add_argument("--matmul-loops", type=int, default=20,
                   help="matmuls per timed sample of each GRU-shaped matmul probe")
    g = p.add_argument_group("env stepping (2)")
    g.add_argument("--env", default="cartpole_swingup", choices=valid_env_names(), metavar="NAME",
                   help="task: " + ", ".join(valid_env_names()))
    g.add_argument("--action-repeat", type=int, default=None, help="default: the task's (cartpole: 8)")
    g.add_argument("--state-steps", type=int, default=400, help="agent steps per timed sample, state obs")
    g.add_argument("--pixel-steps", type=int, default=40, help="agent steps per timed sample, pixel obs")
    g = p.add_argument_group("training (3)")
    g.add_argument("--updates", type=int, default=2, help="model updates per timed sample")
    g.add_argument("--replay-episodes", type=int, default=None,
                   help="random-action episodes in the replay (default: the agent's seed_episodes)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = min(args.repeats, 2), min(args.warmup, 1)
        args.deter_dim, args.z_dim, args.hidden = 16, 4, 16
        args.matmul_loops, args.state_steps, args.pixel_steps, args.updates = 2, 20, 3, 1
        args.replay_episodes = 1
    for name in ("repeats", "matmul_loops", "state_steps", "pixel_steps", "updates"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or (args.replay_episodes is not None and args.replay_episodes < 1):
        p.error("--warmup must be >= 0 and --replay-episodes >= 1")
    return args


# --- 1. planning ---------------------------------------------------------------------------------------
def parse_settings(text: str) -> dict:
    """"key=value,key=value" -> {key: value}, each value read as an int, else a float, else a string."""
    settings = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"setting {item!r} is not key=value")
        for cast in (int, float, str):
            try:
                settings[key] = cast(value)
                break
            except ValueError:
                continue
    return settings


def rssm_step_flops(z: int, a: int, deter: int, hidden: int) -> int:
    """FLOPs of one imagined step for one candidate in imagined_return: model.prior_step then
    model.reward, counting 2 FLOPs per multiply-add of each weight matrix (2 * in * out per Linear;
    biases, ELU/sigmoid/tanh/softplus, sampling z and the CEM's own sampling and top-k are left out):

        embed_za   Linear(z + a -> hidden)                        2 (z + a) hidden
        gru        GRUCell(hidden -> deter)                       2 * 3 (hidden deter + deter deter)
        prior_net  Linear(deter -> hidden), Linear(hidden -> 2 z) 2 deter hidden + 2 hidden (2 z)
        reward_net Linear(deter + z -> hidden), Linear(hidden -> hidden), Linear(hidden -> 1)
                                                                  2 (deter + z) hidden + 2 hidden^2 + 2 hidden

    PlaNet sizes (z 30, a 1, deter 200, hidden 200): 12,400 + 480,000 + 104,000 + 172,400 = 768,800.
    One decision = that x candidates x horizon x iterations (PlaNet preset: x 1000 x 12 x 10 = 92.3 GFLOP;
    cpu preset: x 300 x 12 x 5 = 13.8 GFLOP). The GRU is 62% of it.
    """
    embed = 2 * (z + a) * hidden
    gru = 2 * 3 * (hidden * deter + deter * deter)
    prior = 2 * deter * hidden + 2 * hidden * 2 * z
    reward = 2 * (deter + z) * hidden + 2 * hidden * hidden + 2 * hidden * 1
    return embed + gru + prior + reward


def counted_step_flops(model: RSSM, state: ModelState) -> int:
    """The same count from torch's FLOP counter (matmuls only) on one imagined step of 8 candidates:
    a check that rssm_step_flops matches the model."""
    objective = imagined_return(model, state, t=1, latent="mean")
    n = 8
    with FlopCounterMode(display=False) as counter:
        objective(torch.zeros(n, 1, model.action_dim))
    return counter.get_total_flops() // n


def cem_entry(model: RSSM, state: ModelState, preset: str, overrides: dict, seed: int):
    planner = make_planner("cem", preset=preset, **overrides)
    gen = torch.Generator().manual_seed(seed)
    objective = imagined_return(model, state, t=1, generator=gen)    # sampled latents, as the agent plans

    def decide():
        action = planner.plan(objective, model.action_dim, gen)
        if not bool(torch.isfinite(action).all()):
            raise FloatingPointError(f"CEM ({preset}) returned a non-finite action")
    return planner, decide


def matmul_entry(m: int, k: int, n: int, loops: int, seed: int) -> Callable[[], None]:
    """(m x k) @ (k x n) as nn.Linear computes it (x @ W^T, W stored (n, k)), `loops` times."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g)

    def run():
        for _ in range(loops):
            torch.mm(x, w.t())
    return run


# --- 2. env stepping -----------------------------------------------------------------------------------
class EnvStepper:
    """Random-action agent steps on one env; each call takes `agent_steps` of them (resetting at episode
    ends) and returns the env steps taken."""

    def __init__(self, name: str, obs: str, action_repeat: Optional[int], agent_steps: int, seed: int):
        self.env = make_env(name, obs, action_repeat, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.action_dim = self.env.action_space.shape[0]
        self.agent_steps, self.episodes = agent_steps, 0
        self.env.reset(seed=seed)

    def __call__(self) -> int:
        env_steps = 0
        for _ in range(self.agent_steps):
            action = self.rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)
            _, _, terminated, truncated, info = self.env.step(action)
            env_steps += info["env_steps"]
            if terminated or truncated:
                self.episodes += 1
                self.env.reset()
        return env_steps


# --- 3. training ---------------------------------------------------------------------------------------
def fill_replay(replay: Replay, name: str, action_repeat: Optional[int], episodes: int, seed: int,
                obs_type: str = "state", max_steps: Optional[int] = None, physics_state: bool = True) -> list[int]:
    """Random-action episodes (cut at max_steps agent steps, if given) into the replay; returns their lengths
    in agent steps."""
    env = make_env(name, obs_type, action_repeat, seed=seed)
    rng = np.random.default_rng(seed)
    lengths = []
    for k in range(episodes):
        obs, info = env.reset(seed=seed + k)
        builder = EpisodeBuilder(physics_state)
        builder.start(obs, info)
        done = False
        while not done:
            action = rng.uniform(-1.0, 1.0, env.action_space.shape[0]).astype(np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            builder.add(action, reward, obs, info)
            done = terminated or truncated or len(builder) == max_steps
        lengths.append(len(builder))
        replay.add_episode(builder.finish())
    env.close()
    return lengths


def training_entry(cfg: AgentConfig, replay: Replay, obs_shape: tuple, action_dim: int, updates: int,
                   seed: int) -> Callable[[], None]:
    """`updates` model updates as Agent.train takes them (amortized posterior, the config's sizes)."""
    torch.manual_seed(seed)
    model = RSSM(obs_shape, action_dim, cfg.deter, cfg.stoch, cfg.hidden)
    post = make_posterior(FILTER, model)
    params = list(model.parameters()) + list(post.parameters())
    opt = make_adam(params, cfg.lr, cfg.adam_eps)
    objective = TrainObjective(free_nats=cfg.free_nats)
    rng = np.random.default_rng(seed)
    length = min(cfg.seq_len, min(len(e["reward"]) for e in replay.episodes))

    def run():
        for _ in range(updates):
            batch, start = replay.sample(cfg.batch_size, length, rng)
            batch.offset = start
            loss, _ = post.training_loss(model, batch, objective)
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError("non-finite training loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
    return run


# --- the run -------------------------------------------------------------------------------------------
def machine_info() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "MUJOCO_GL": os.environ.get("MUJOCO_GL"), "loadavg_start": load}


def run_rounds(entries: dict[str, Callable], repeats: int, warmup: int):
    """Warmup per entry, then `repeats` rounds, each entry once per round (order rotated each round).
    Returns per entry the sample times and what each call returned (a count of work, or None)."""
    names = list(entries)
    for name in names:
        for _ in range(warmup):
            entries[name]()
    times = {n: [] for n in names}
    results = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            out = entries[name]()
            times[name].append(time.perf_counter() - t0)
            results[name].append(out)
    return times, results


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = AgentConfig()
    if args.quick:   # tiny training sizes too
        cfg = AgentConfig(batch_size=4, seq_len=10, deter=16, stoch=4, hidden=16)
    replay_episodes = args.replay_episodes or cfg.seed_episodes
    repeat = default_action_repeat(args.env) if args.action_repeat is None else args.action_repeat
    info = machine_info()
    t_setup = time.perf_counter()

    # 1. planning: one RSSM (fresh weights: the cost does not depend on them) planning from a random belief
    torch.manual_seed(args.seed)
    model = RSSM((args.obs_dim,), args.action_dim, deter_dim=args.deter_dim, z_dim=args.z_dim, hidden=args.hidden)
    model.eval()
    g = torch.Generator().manual_seed(args.seed)
    state = ModelState(torch.randn(1, args.deter_dim, generator=g), torch.randn(1, args.z_dim, generator=g))
    step_flops = rssm_step_flops(args.z_dim, args.action_dim, args.deter_dim, args.hidden)
    counted = counted_step_flops(model, state)

    entries: dict[str, Callable] = {}
    cem = {}
    for i, preset in enumerate(PRESETS):
        planner, decide = cem_entry(model, state, preset, QUICK_CEM[preset] if args.quick else {}, args.seed + i)
        s = planner.settings
        mm_name = f"matmul ({s.candidates}x{args.deter_dim})@({args.deter_dim}x{3 * args.deter_dim})"
        cem[preset] = {"settings": s, "entry": f"cem {preset}", "matmul_entry": mm_name,
                       "flops": step_flops * s.candidates * s.horizon * s.iterations,
                       "matmul_flops": args.matmul_loops * 2 * s.candidates * args.deter_dim * 3 * args.deter_dim}
        entries[f"cem {preset}"] = decide
        entries[mm_name] = matmul_entry(s.candidates, args.deter_dim, 3 * args.deter_dim, args.matmul_loops,
                                        args.seed + 10 + i)

    # 2. env stepping
    env_errors = {}
    for obs, steps in (("state", args.state_steps), ("pixels", args.pixel_steps)):
        try:
            entries[f"env {obs}"] = EnvStepper(args.env, obs, args.action_repeat, steps, args.seed)
        except Exception as e:   # e.g. no EGL / OSMesa to render pixels with: report it, measure the rest
            env_errors[obs] = f"{type(e).__name__}: {e}".splitlines()[0][:200]

    with tempfile.TemporaryDirectory(prefix="bench_agent_replay_") as replay_dir:
        # 3. training, on a replay of random-action episodes with state observations
        replay = Replay(replay_dir)
        episode_lengths = fill_replay(replay, args.env, args.action_repeat, replay_episodes, args.seed + 100)
        obs_shape = replay.episodes[0]["obs"].shape[1:]
        action_dim = replay.episodes[0]["action"].shape[1]
        entries["train"] = training_entry(cfg, replay, obs_shape, action_dim, args.updates, args.seed)
        setup_s = time.perf_counter() - t_setup

        print(f"torch {info['torch']}, threads {info['threads']} (interop {info['interop_threads']}), "
              f"{info['cpus']} CPUs, {info['platform']} {info['processor'] or ''}".rstrip())
        print(f"python {info['python']}, OMP_NUM_THREADS={info['OMP_NUM_THREADS']}, MUJOCO_GL={info['MUJOCO_GL']}"
              + ("" if info["loadavg_start"] is None else
                 f", load average {info['loadavg_start'][0]:.2f} at start"))
        if info["loadavg_start"] is not None and info["loadavg_start"][0] > 0.5 * (info["cpus"] or 1):
            print("NOTE: the machine is busy (load average above half the CPUs): times are inflated.")
        if args.quick:
            print("QUICK MODE: tiny sizes, 2 repeats; a smoke test, not a measurement.")
        print(f"warmup {args.warmup}, repeats {args.repeats}, round-robin over {len(entries)} entries; "
              f"setup {setup_s:.1f} s", flush=True)

        t_start = time.perf_counter()
        times, results = run_rounds(entries, args.repeats, args.warmup)
        total_s = time.perf_counter() - t_start

    med = lambda xs: statistics.median(xs)
    rows = {"planning": [], "env": [], "training": []}

    # --- 1. planning table
    if counted != step_flops:
        print(f"WARNING: analytic FLOPs per imagined step {step_flops:,} differ from torch's count {counted:,}")
    print()
    print(f"1. CEM, one decision: RSSM(deter {args.deter_dim}, z {args.z_dim}, hidden {args.hidden}), "
          f"{args.action_dim} action, obs {args.obs_dim}; imagined_return (sampled latents)")
    print(f"   FLOPs per imagined step per candidate: {step_flops:,} analytic (torch flop counter: {counted:,}); "
          f"x candidates x horizon x iterations")
    header = (f"   {'preset':<7} {'H':>3} {'cand':>5} {'iters':>5} {'top':>4}  {'ms/dec':>8} {'min ms':>8}  "
              f"{'GFLOP/dec':>9} {'GFLOP/s':>8}  {'matmul GFLOP/s':>14}  {'ratio':>5} {'paired':>6}")
    print(header)
    print("   " + "-" * (len(header) - 3))
    for preset in PRESETS:
        c = cem[preset]
        s, td, tm = c["settings"], times[c["entry"]], times[c["matmul_entry"]]
        achieved = [c["flops"] / t / 1e9 for t in td]
        mm = [c["matmul_flops"] / t / 1e9 for t in tm]
        row = {"preset": preset, "horizon": s.horizon, "candidates": s.candidates, "iterations": s.iterations,
               "top_k": s.top_k, "ms_median": 1e3 * med(td), "ms_min": 1e3 * min(td),
               "gflop_per_decision": c["flops"] / 1e9, "gflops_median": c["flops"] / med(td) / 1e9,
               "matmul_shape": c["matmul_entry"], "matmul_gflops_median": med(mm),
               "ratio_to_matmul": (c["flops"] / med(td)) / (c["matmul_flops"] / med(tm)),
               "paired_ratio_to_matmul": med([a / b for a, b in zip(achieved, mm)])}
        rows["planning"].append(row)
        print(f"   {preset:<7} {s.horizon:>3} {s.candidates:>5} {s.iterations:>5} {s.top_k:>4}  "
              f"{row['ms_median']:>8.1f} {row['ms_min']:>8.1f}  {row['gflop_per_decision']:>9.2f} "
              f"{row['gflops_median']:>8.2f}  {row['matmul_gflops_median']:>14.2f}  "
              f"{row['ratio_to_matmul']:>5.2f} {row['paired_ratio_to_matmul']:>6.2f}")
    print(f"   matmul: (candidates x {args.deter_dim}) @ ({args.deter_dim} x {3 * args.deter_dim}), the GRU's shape, "
          f"x{args.matmul_loops} per sample; ratio: achieved / matmul GFLOP/s (medians); paired: median per round")

    # --- 2. env table
    print()
    print(f"2. Env steps: {args.env}, random actions, action repeat {repeat} (env steps counted, resets included)")
    header = (f"   {'obs':<7} {'agent steps/sample':>18}  {'env steps/s':>11} {'min':>9} {'max':>9}  "
              f"{'ms/agent step':>13}")
    print(header)
    print("   " + "-" * (len(header) - 3))
    for obs in ("state", "pixels"):
        name = f"env {obs}"
        if name not in times:
            rows["env"].append({"obs": obs, "error": env_errors[obs]})
            print(f"   {obs:<7} unavailable: {env_errors[obs]}")
            continue
        rates = [n / t for n, t in zip(results[name], times[name])]
        steps = entries[name].agent_steps
        row = {"obs": obs, "agent_steps_per_sample": steps, "env_steps_per_sample": med(results[name]),
               "env_steps_per_s_median": med(rates), "env_steps_per_s_min": min(rates),
               "env_steps_per_s_max": max(rates), "ms_per_agent_step": 1e3 * med(times[name]) / steps}
        rows["env"].append(row)
        print(f"   {obs:<7} {steps:>18}  {row['env_steps_per_s_median']:>11.0f} {row['env_steps_per_s_min']:>9.0f} "
              f"{row['env_steps_per_s_max']:>9.0f}  {row['ms_per_agent_step']:>13.2f}")

    # --- 3. training table
    t_upd = [t / args.updates for t in times["train"]]
    row = {"posterior": FILTER, "batch_size": cfg.batch_size, "seq_len": min(cfg.seq_len, min(episode_lengths) + 1),
           "deter": cfg.deter, "stoch": cfg.stoch, "hidden": cfg.hidden, "free_nats": cfg.free_nats,
           "updates_per_sample": args.updates, "updates_per_s_median": 1 / med(t_upd),
           "ms_per_update_median": 1e3 * med(t_upd), "ms_per_update_min": 1e3 * min(t_upd)}
    rows["training"].append(row)
    print()
    print(f"3. Model updates: amortized posterior, batch {row['batch_size']} x {row['seq_len']} steps, "
          f"RSSM(deter {cfg.deter}, stoch {cfg.stoch}, hidden {cfg.hidden}), free nats {cfg.free_nats}, "
          f"Adam(lr {cfg.lr}, eps {cfg.adam_eps}), clip {cfg.grad_clip};")
    print(f"   replay of {replay_episodes} random-action episodes, windows sampled per update (as Agent.train)")
    print(f"   {row['updates_per_s_median']:.2f} updates/s: {row['ms_per_update_median']:.1f} ms/update median "
          f"(min {row['ms_per_update_min']:.1f}), {args.updates} per sample")

    # --- per episode, what the three cost (one episode = the replay's episode length in agent steps)
    ep = episode_lengths[0]
    print()
    parts = [f"planning {p['preset']} {p['ms_median'] * ep / 1e3:.1f} s" for p in rows["planning"]]
    parts += [f"env {r['obs']} {r['ms_per_agent_step'] * ep / 1e3:.2f} s" for r in rows["env"] if "error" not in r]
    parts.append(f"{cfg.train_steps} updates {cfg.train_steps * row['ms_per_update_median'] / 1e3:.1f} s")
    print(f"Per episode of {ep} agent steps ({ep * repeat} env steps): " + ", ".join(parts))
    info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"total timed phase {total_s:.1f} s (setup {setup_s:.1f} s)"
          + ("" if info["loadavg_end"] is None else f"; load average {info['loadavg_end'][0]:.2f} at end"))

    if args.json:
        config = {k: v for k, v in vars(args).items()}
        out = {"config": config, "agent_config": {k: getattr(cfg, k) for k in (
                   "batch_size", "seq_len", "deter", "stoch", "hidden", "free_nats", "lr", "adam_eps", "grad_clip",
                   "train_steps", "seed_episodes")},
               "machine": info, "step_flops_analytic": step_flops, "step_flops_counted": counted,
               "action_repeat": repeat, "episode_agent_steps": episode_lengths, "rows": rows,
               "raw_times_s": times, "raw_env_steps": {n: results[n] for n in results if n.startswith("env ")},
               "env_errors": env_errors, "setup_s": setup_s, "total_timed_s": total_s}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
