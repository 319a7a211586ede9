"""Wall-clock cost of one training step per posterior type, on the PlaNet-sized RSSM (CPU or GPU).

Measures, in one run and interleaved round-robin (so that load changes on a shared machine hit
every entry alike):
  1. one full training step (posterior.training_loss forward, backward, grad-norm clip, Adam step)
     for every registered posterior at its defaults, and for those refined by gradient steps
     (semi_amortized) the detached variant at each K of --refine-steps and the unrolled one at each K of
     --unrolled-steps; per_sequence also with steps_per_update=1;
  2. one refinement step: directly (one ELBO forward + backward wrt lambda) and as
     refine(steps=1) - refine(steps=0), each relative to one amortized (filter) training step;
  3. fp32 matmul throughput (N x N @ N x N), so that each time can also be given as
     "matmul-equivalent GFLOP" = time x measured GFLOP/s, comparable across machines.

Times are medians over --repeats after --warmup. Run as a script:

    PYTHONPATH=. python benchmarks/bench_inference.py [--repeats 15] [--threads 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import platform
import statistics
import time
from typing import Callable

import torch

from world_models.base import SequenceBatch
from world_models.posteriors import POSTERIORS, REGISTRY, Objective, RefineSettings, make_posterior
from world_models.posteriors.registry import FILTER, Q_STAR, REFINED
from world_models.posteriors.refine import refine, sequence_elbo
from world_models.rssm import RSSM
from world_models.training import make_adam


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch", type=int, default=50, help="sequences per batch")
    p.add_argument("--length", type=int, default=50, help="steps per sequence")
    p.add_argument("--obs-dim", type=int, default=5)
    p.add_argument("--action-dim", type=int, default=1)
    p.add_argument("--deter-dim", type=int, default=200, help="GRU size")
    p.add_argument("--z-dim", type=int, default=30, help="stochastic size")
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--repeats", type=int, default=15, help="timed repetitions per entry (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions per entry first")
    p.add_argument("--refine-steps", type=int, nargs="+", default=[1, 5],
                   help="K for the detached entries of posteriors refined by gradient steps")
    p.add_argument("--unrolled-steps", type=int, nargs="*", default=[1],
                   help="K for their unrolled entries (none: skip)")
    p.add_argument("--refine-lr", type=float, default=0.01)
    p.add_argument("--per-sequence-lr", type=float, default=0.05, help="per_sequence train_lr in its 1 step/update entry")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eps", type=float, default=1e-4)
    p.add_argument("--grad-clip", type=float, default=1000.0)
    p.add_argument("--free-nats", type=float, default=3.0)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--small-matmul", type=int, nargs=3, default=[50, 200, 200], metavar=("M", "K", "N"),
                   help="shape of the small-op probe (M x K @ K x N, timed as a loop of 100): the RSSM's "
                        "layer size, which reveals thread oversubscription that the large matmul hides")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: leave torch's default). On a shared, loaded machine "
                        "the default can make small ops 100x slower; try 1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write all results (and raw times) as JSON here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if any(k < 1 for k in args.refine_steps + args.unrolled_steps):
        p.error("refinement steps K must be >= 1")
    return args


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def make_batch(args, device) -> SequenceBatch:
    g = torch.Generator().manual_seed(args.seed)
    B, T = args.batch, args.length
    obs = torch.randn(B, T, args.obs_dim, generator=g)
    actions = torch.rand(B, T, args.action_dim, generator=g) * 2 - 1
    rewards = torch.randn(B, T, generator=g)
    return SequenceBatch(obs, actions, rewards=rewards, index=torch.arange(B)).to(device)


def make_model(args, device) -> RSSM:
    torch.manual_seed(args.seed)   # the same initial model for every entry
    return RSSM((args.obs_dim,), args.action_dim, deter_dim=args.deter_dim, z_dim=args.z_dim,
                hidden=args.hidden).to(device)


def training_step_entry(args, device, batch, name, **settings) -> Callable[[], None]:
    """One full training step (as world_models.training.train takes it) on its own model and optimizer."""
    model = make_model(args, device)
    post = make_posterior(name, model, **settings).to(device)
    params = [p for p in list(model.parameters()) + list(post.parameters()) if p.requires_grad]
    opt = make_adam(params, args.lr, args.eps)
    objective = Objective(free_nats=args.free_nats)

    def step():
        loss, _ = post.training_loss(model, batch, objective)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"non-finite loss in {name} {settings}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        opt.step()
    return step


def refinement_entries(args, device, batch) -> dict[str, Callable[[], None]]:
    """One ELBO forward + backward wrt lambda, and refine() with 0 and 1 steps, from the amortized init."""
    model = make_model(args, device)
    post = make_posterior(REFINED, model, refine_settings=RefineSettings(steps=1, lr=args.refine_lr)).to(device)
    with torch.no_grad():
        lam0 = post.initial_params(model, batch)
    s0 = RefineSettings(steps=0, lr=args.refine_lr)
    s1 = RefineSettings(steps=1, lr=args.refine_lr)

    def elbo_grad():
        lam = lam0.detach().requires_grad_(True)
        elbo = sequence_elbo(model, post, batch, lam, 1).sum()
        torch.autograd.grad(elbo, lam)

    return {"refine: ELBO fwd+bwd wrt lambda": elbo_grad,
            "refine(steps=0)": lambda: refine(model, post, batch, lam0, s0),
            "refine(steps=1)": lambda: refine(model, post, batch, lam0, s1)}


def matmul_entry(n: int, device) -> Callable[[], None]:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    return lambda: torch.mm(a, b)


def small_matmul_entry(m: int, k: int, n: int, device, loops: int = 100) -> Callable[[], None]:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(m, k, generator=g).to(device)
    b = torch.randn(k, n, generator=g).to(device)

    def run():
        for _ in range(loops):
            torch.mm(a, b)
    return run


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = make_batch(args, device)

    entries: dict[str, Callable[[], None]] = {}
    for name in POSTERIORS:                  # each registered posterior at its defaults
        entries[name] = training_step_entry(args, device, batch, name)
    for name in (n for n in POSTERIORS if "refine_settings" in inspect.signature(REGISTRY[n].build).parameters):
        for variant, steps in (("detached", args.refine_steps), ("unrolled", args.unrolled_steps)):
            for k in steps:
                entries[f"{name} {variant} K={k}"] = training_step_entry(
                    args, device, batch, name, variant=variant, refine_settings=RefineSettings(steps=k, lr=args.refine_lr))
    entries[f"{Q_STAR} (1 step/update)"] = training_step_entry(
        args, device, batch, Q_STAR, steps_per_update=1, train_lr=args.per_sequence_lr)
    entries.update(refinement_entries(args, device, batch))
    entries["matmul"] = matmul_entry(args.matmul_size, device)
    entries["small matmul"] = small_matmul_entry(*args.small_matmul, device)

    names = list(entries)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{platform.machine()} {platform.processor() or ''}".rstrip())
    print(f"RSSM(deter {args.deter_dim}, z {args.z_dim}, hidden {args.hidden}), obs {args.obs_dim}, "
          f"actions {args.action_dim}, batch {args.batch} x {args.length} steps, free nats {args.free_nats}, "
          f"Adam(lr {args.lr}, eps {args.eps}), clip {args.grad_clip}; "
          f"warmup {args.warmup}, repeats {args.repeats}", flush=True)

    t_start = time.perf_counter()
    for name in names:                       # warmup, per entry
        for _ in range(args.warmup):
            entries[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):           # round-robin, order rotated each round
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(timed(entries[name], device))
    total_s = time.perf_counter() - t_start

    med = {n: statistics.median(ts) for n, ts in times.items()}
    flop = 2.0 * args.matmul_size ** 3
    gflops_samples = [flop / t / 1e9 for t in times["matmul"]]
    gflops = statistics.median(gflops_samples)
    sm, sk, sn = args.small_matmul
    small_samples = [100 * 2.0 * sm * sk * sn / t / 1e9 for t in times["small matmul"]]
    small_gflops = statistics.median(small_samples)
    base = med[FILTER]

    def paired_ratio(name):   # median over rounds of time / amortized time in the same round
        return statistics.median(a / b for a, b in zip(times[name], times[FILTER]))

    rows = []
    train_names = [n for n in names if not n.startswith("refine") and "matmul" not in n]
    for n in train_names:
        rows.append({"name": n, "kind": "training_step", "ms_median": 1e3 * med[n], "ms_min": 1e3 * min(times[n]),
                     "ratio_to_amortized": med[n] / base, "paired_ratio_to_amortized": paired_ratio(n),
                     "matmul_equiv_gflop": med[n] * gflops})
    # one refinement step: directly, and as refine(1) - refine(0) (per round, then median)
    one_step = {
        "refinement step (ELBO fwd+bwd wrt lambda)": times["refine: ELBO fwd+bwd wrt lambda"],
        "refinement step (refine K=1 minus K=0)": [a - b for a, b in zip(times["refine(steps=1)"],
                                                                         times["refine(steps=0)"])],
    }
    for n, ts in one_step.items():
        m = statistics.median(ts)
        rows.append({"name": n, "kind": "refinement_step", "ms_median": 1e3 * m, "ms_min": 1e3 * min(ts),
                     "ratio_to_amortized": m / base,
                     "paired_ratio_to_amortized": statistics.median(a / b for a, b in zip(ts, times[FILTER])),
                     "matmul_equiv_gflop": m * gflops})

    w = max(len(r["name"]) for r in rows)
    header = (f"{'name':<{w}}  {'ms/step':>9}  {'min ms':>9}  {'ratio':>6}  {'paired':>6}  {'GFLOP-eq':>9}")
    print()
    print(f"fp32 matmul {args.matmul_size}x{args.matmul_size} @ {args.matmul_size}x{args.matmul_size}: "
          f"{gflops:.1f} GFLOP/s median (min {min(gflops_samples):.1f}, max {max(gflops_samples):.1f}) "
          f"over {len(gflops_samples)} runs interleaved with the steps")
    print(f"fp32 small matmul {sm}x{sk} @ {sk}x{sn} (x100): {small_gflops:.2f} GFLOP/s median "
          f"(min {min(small_samples):.2f}, max {max(small_samples):.2f})")
    if small_gflops < 0.05 * gflops:
        print("WARNING: small ops run at under 5% of the large-matmul rate: likely thread oversubscription "
              "(a loaded machine); step times are inflated and GFLOP-eq is not comparable. Try --threads 1.")
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        if r["kind"] == "refinement_step" and r is rows[len(train_names)]:
            print("-" * len(header))
        print(f"{r['name']:<{w}}  {r['ms_median']:>9.1f}  {r['ms_min']:>9.1f}  {r['ratio_to_amortized']:>6.2f}  "
              f"{r['paired_ratio_to_amortized']:>6.2f}  {r['matmul_equiv_gflop']:>9.2f}")
    print()
    print("ms/step: median over repeats; ratio: median / median of amortized; paired: median over rounds of "
          "the per-round ratio;\nGFLOP-eq: median time x measured matmul GFLOP/s (machine-independent-ish cost).")
    print(f"refine(steps=0) alone: {1e3 * med['refine(steps=0)']:.2f} ms; total timed phase {total_s:.1f} s")

    if args.json:
        out = {"config": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "device": str(device), "matmul_gflops": gflops, "matmul_gflops_samples": gflops_samples,
               "small_matmul_gflops": small_gflops, "small_matmul_gflops_samples": small_samples,
               "rows": rows, "raw_times_s": times, "total_timed_s": total_s}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
