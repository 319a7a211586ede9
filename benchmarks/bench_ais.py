"""AIS (world_models/ais.py) on the RSSM at the study's sizes, with the rollout's given-latents path (h from one
RSSM.deter_path call, then the posterior head on every step at once) against the step-by-step loop it replaces.

Sizes as in the study's gap analysis: the agent's RSSM (128/30/128) on cartpole from state (5-d observations, 1-d
actions), 16 windows of 50 steps, 16 chains, 2 leapfrog steps, from a q* in the smoother's family (the smoothing
encoder with nonzero per-step offsets). Both entries run the same AIS steps from the same seed, interleaved
round-robin in one process; the ratio is what the path buys per AIS step (its 1000 steps are about a third of
a run's gap analysis). It also prints how far the two log-weight estimates are apart (float32 rounding only).

    PYTHONPATH=. python benchmarks/bench_ais.py [--steps 10] [--repeats 5] [--json out.json]
    PYTHONPATH=. python benchmarks/bench_ais.py --quick     # tiny sizes: a smoke test, not a measurement
"""
from __future__ import annotations

import argparse
import json
import statistics
from contextlib import contextmanager

import torch

import world_models.rollout as rollout_module
from benchmarks.bench_agent import machine_info, run_rounds
from world_models import ais
from world_models.base import SequenceBatch
from world_models.posteriors import make_posterior
from world_models.rssm import RSSM


@contextmanager
def plain_loop():
    """Inside: rollouts with given latents take the step-by-step loop."""
    saved = rollout_module.fast_loop
    rollout_module.fast_loop = lambda model, posterior, ctx, z=None: saved(model, posterior, ctx) if z is None else None
    try:
        yield
    finally:
        rollout_module.fast_loop = saved


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="AIS steps per timed call")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (medians reported)")
    p.add_argument("--sequences", type=int, default=16)
    p.add_argument("--length", type=int, default=50)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.sequences, args.length, args.chains = 2, 1, 2, 6, 2
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hidden = 8 if args.quick else 128
    model = RSSM((5,), 1, deter_dim=hidden, z_dim=30, hidden=hidden)
    q = make_posterior("semi_amortized", model, smoothing_init=True, hidden=hidden)
    B, T = args.sequences, args.length
    batch = SequenceBatch(torch.randn(B, T, 5), torch.rand(B, T, 1) * 2 - 1, index=torch.arange(B))  # no rewards,
    # as the gap analysis's windows
    with torch.no_grad():
        ctx = q.initial_params(model, batch)
        ctx[..., -60:] += 0.1 * torch.randn_like(ctx[..., -60:])     # offsets as in a fitted q*
    s = ais.AISSettings(chains=args.chains, steps=args.steps)

    def run(plain: bool):
        torch.manual_seed(1)
        if plain:
            with plain_loop():
                return ais.ais(model, q, batch, ctx, s)[0]
        return ais.ais(model, q, batch, ctx, s)[0]

    entries = {"plain loop": lambda: run(True), "given-latents path": lambda: run(False)}
    times, results = run_rounds(entries, args.repeats, warmup=1)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = float((results["plain loop"][0] - results["given-latents path"][0]).abs().max())
    out = {"machine": machine_info(), "settings": vars(args),
           "seconds_per_ais_step": {k: v / args.steps for k, v in med.items()},
           "plain_over_given": med["plain loop"] / med["given-latents path"],
           "max_abs_difference_log_px": diff}
    for k, v in med.items():
        print(f"{k:>20}: {1000 * v / args.steps:8.1f} ms per AIS step ({args.chains} chains x {B} sequences x {T} steps)")
    print(f"plain / given-latents: {out['plain_over_given']:.2f}x; largest |difference| of the log p(x) estimates: "
          f"{diff:.2e} nats per sequence")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
