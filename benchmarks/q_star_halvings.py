"""Does halving q*'s step size on each plateau (`--q-star-lr-halvings`) tighten it? The same windows, the same start
and the same 1000-sample ELBO draws for every setting, so the difference is paired.

    python benchmarks/q_star_halvings.py --run RUN          # an agent run: its own encoder's family, held-out windows
    python benchmarks/q_star_halvings.py --task vsmc_lgssm  # a linear toy task's true model: a fresh Markov-Gaussian
                                                            # encoder's family, against the exact log p(x)

Prints, per number of halvings, the q* report (steps, where it halved), its mean ELBO per step (and its distance to
log p(x) where that is exact) and seconds; then each setting minus the first, paired, ± s.e. over sequences.
"""
from __future__ import annotations

import argparse
import time

import torch

from analysis.decompose import GapSettings, fresh_encoder
from analysis.gaps import same_family_q_star
from analysis.run_loading import heldout_replay, load_run, windows
from envs.toy_tasks import TASKS, generate, make_task
from world_models import bounds
from world_models.posteriors.optimum import OptimumSettings
from world_models.posteriors.registry import MARKOV_ENCODER
from world_models.training import minibatch


def setup(args):
    """(model, posterior whose family q* is optimized in, sequences, exact log p(x) per sequence or None)."""
    if args.run:
        agent = load_run(args.run)
        batch = windows(heldout_replay(agent, 4, "eval"), args.sequences, 50, 0)
        return agent.model, agent.posterior, batch, None
    task = make_task(args.task)
    if not task.linear:
        raise SystemExit(f"--task {args.task} has no exact log p(x); linear tasks: "
                         f"{', '.join(n for n in sorted(TASKS) if make_task(n).linear)}")
    train, _ = generate(task, 1000, seed=0, dtype=torch.float64)
    test, _ = generate(task, 200, seed=1, dtype=torch.float64)
    batch = minibatch(test, torch.arange(args.sequences))
    torch.manual_seed(0)
    encoder = fresh_encoder(MARKOV_ENCODER, task.true_model, train, GapSettings(encoder_steps=args.encoder_steps))
    return task.true_model, encoder, batch, bounds.exact_log_marginal(task.true_model, batch)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", help="agent run directory with a checkpoint")
    where.add_argument("--task", choices=sorted(TASKS), help="toy task (its true model)")
    p.add_argument("--sequences", type=int, default=None, help="windows (--run, default 8) or sequences (default 100)")
    p.add_argument("--halvings", type=int, nargs="+", default=[0, 3], help="values of lr_halvings to compare")
    p.add_argument("--encoder-steps", type=int, default=GapSettings.encoder_steps,
                   help="steps to fit the Markov-Gaussian encoder (--task)")
    args = p.parse_args(argv)
    args.sequences = args.sequences or (8 if args.run else 100)
    torch.set_num_threads(1)
    model, posterior, batch, log_p = setup(args)
    T, elbos = batch.length, {}
    for h in args.halvings:
        torch.manual_seed(1)
        t0 = time.perf_counter()
        q = same_family_q_star(model, batch, posterior, OptimumSettings(lr_halvings=h))
        seconds = time.perf_counter() - t0
        torch.manual_seed(2)
        elbos[h] = bounds.elbo(model, q.posterior, batch, 1000, ctx=q.ctx).double()
        exact = "" if log_p is None else f", log p(x) - L[q*] {float((log_p - elbos[h]).mean()) / T:.4f} " \
                                         f"± {float((log_p - elbos[h]).std()) / len(log_p) ** 0.5 / T:.4f}"
        print(f"halvings {h}: {q.report.steps} steps, halved at {q.report.lr_halved_at}, stopped by "
              f"{q.report.stopped_by}; L[q*] per step {float(elbos[h].mean()) / T:.4f}{exact}; {seconds:.0f} s")
    first = args.halvings[0]
    for h in args.halvings[1:]:
        d = (elbos[h] - elbos[first]) / T
        print(f"halvings {h} minus {first}: {float(d.mean()):+.4f} ± {float(d.std()) / len(d) ** 0.5:.4f} nats per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
