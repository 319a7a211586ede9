"""Learn a toy-task model jointly with each posterior type, then measure it against the truth.

    python -m analysis.toy_experiment --task synthetic9 --out results/toy_synthetic9

Writes to --out: results.json, results.md (tables) and PNGs: held-out log-likelihood, learned
vs true noise, gap decomposition per posterior, amortization gap vs refinement steps and vs
wall-clock. On linear tasks the model is an LGSSM and `kalman` (exact marginal likelihood)
is trained as the gold standard; on synthetic10 the model is a nonlinear SSM.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from analysis import toy_plots
from analysis.toy_plots import run_failure
from analysis.cli import parse_with_quick, parser
from analysis.decompose import GapSettings, add_gap_arguments, check_gap_arguments, decompose, fit, gap_settings_from
from analysis.gaps import log_px, over_seeds, summarize
from envs.toy_tasks import TASKS, generate, make_task
from sweeps.commit import commit, not_committable
from world_models.linear_gaussian import LinearGaussianSSM
from world_models.nonlinear_ssm import NonlinearSSM
from world_models.posteriors import SSM_POSTERIORS, Objective, toy_posterior
from world_models.training import NonFiniteLoss, minibatch


METHODS = ("kalman", *SSM_POSTERIORS)
# What the measurement does beyond its options; --resume starts afresh over results of another protocol. 2: same-family q*
# (mean-field ones over means and log stds), a fresh Markov-Gaussian encoder, fresh encoders fitted on all training
# sequences, AIS and BDMC where log p(x) is not exact. 3: each fresh encoder is its best validation checkpoint where
# its last iterate is significantly worse (decompose.EncoderCheckpoints; at lr 1e-2 the last iterate was up to 0.18
# nats per step below the best on square's filter, and 4.5 below it on square's Markov encoder); log p(x) exact by
# quadrature on the 1-d nonlinear models (true and learned) where its grid check passes.
PROTOCOL = 3
# gap settings the toy experiment sets from its own options (gap_settings), or that its models decide
TOY_FIXED = ("encoder_batch_size", "encoder_lr", "seed", "exact_log_px")
# settings added after some results.json were written, with the value that does what those calls did
SETTINGS_BEFORE = {"q_star_lr_halvings": 0}
QUICK = {"steps": 300, "gap_sequences": 20, "eval_samples": 200, "q_star_max_steps": 300, "encoder_steps": 150,
         "curve_steps": [0, 1, 5, 20], "ais_steps": 200, "ais_chains": 8, "bdmc_sequences": 2}


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("--task", default="synthetic9", choices=sorted(TASKS), help="toy task (docs/definitions.md section 3)")
    p.add_argument("--out", default=None, help="results folder (default results/toy_<task>)")
    p.add_argument("--posteriors", nargs="+", default=list(SSM_POSTERIORS), choices=SSM_POSTERIORS,
                   help="posterior types to train with (kalman is added on linear tasks)")
    p.add_argument("--train-sequences", type=int, default=1000, help="training sequences (DKS used 5000)")
    p.add_argument("--test-sequences", type=int, default=200, help="held-out sequences for log-likelihood")
    p.add_argument("--steps", type=int, default=2000, help="training steps per method")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per training step")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate for model and encoder")
    p.add_argument("--refine-steps", type=int, default=3, help="K for semi_amortized training")
    p.add_argument("--refine-lr", type=float, default=0.1, help="refinement step size (Adam)")
    p.add_argument("--per-sequence-steps", type=int, default=3, help="warm-started SVI steps per update (per_sequence)")
    p.add_argument("--gap-sequences", type=int, default=100, help="sequences per split for the gap decomposition")
    add_gap_arguments(p, exclude=TOY_FIXED)
    p.add_argument("--seed", type=int, default=0, help="seed for data and initialization")
    p.add_argument("--seeds", type=int, default=3,
                   help="training seeds per method (the data stay fixed); means ± s.e. over seeds are reported")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (these models are tiny: 1 is fastest)")
    p.add_argument("--commit", action="store_true",
                   help="git-commit OUT (results, tables and plots; not the models) each time a stage finishes: the "
                        "true model's gaps, then each (method, seed) run, so that a stopped call continues from git")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs (method, seed) and true-model gaps that OUT/results.json already holds from a "
                        "call with the same settings, and run the rest (all of them where it holds results of an "
                        "earlier measurement protocol)")
    args = parse_with_quick(p, argv, QUICK, positive=(
        "train_sequences", "test_sequences", "steps", "batch_size", "gap_sequences", "eval_samples", "encoder_steps",
        "q_star_samples", "q_star_max_steps", "ais_chains", "ais_leapfrog", "seeds"))
    if args.refine_steps < 0 or args.per_sequence_steps < 0:
        p.error("refinement step counts must be >= 0")
    check_gap_arguments(p, args)
    args.out = Path(args.out or f"results/toy_{args.task}")
    if args.commit and (why := not_committable(args.out)):
        p.error(f"--commit: {why}; give an --out that git tracks, e.g. docs/toy/{args.task}")
    return args


def new_model(task, seed):
    torch.manual_seed(seed)
    obs_dim = task.true_model.obs_shape[0]
    if task.linear:
        return LinearGaussianSSM(task.true_model.z_dim, obs_dim, 1)
    return NonlinearSSM(task.true_model.z_dim, obs_dim, 1)


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task = make_task(args.task)
    train_data, _ = generate(task, args.train_sequences, seed=args.seed)
    test_data, _ = generate(task, args.test_sequences, seed=args.seed + 1)
    gap_sets = {"train": minibatch(train_data, torch.arange(min(args.gap_sequences, args.train_sequences))),
                "test": minibatch(test_data, torch.arange(min(args.gap_sequences, args.test_sequences)))}
    # the results' settings (--resume compares them): all but how the call runs (--workers gives the same numbers)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                if k not in ("resume", "commit", "workers")}
    results = {"task": task.name, "settings": {**settings, "protocol": PROTOCOL},
               "machine": f"{torch.get_num_threads()} torch threads, torch {torch.__version__}", "methods": {}}
    done = finished_runs(args.out, results["settings"]) if args.resume else {}
    true_ll, rec = log_px(task.true_model, test_data.to("cpu"), None, smc_n=args.eval_samples)
    results["true_model"] = {"test_log_lik": summarize(true_ll, test_data.length), **rec,
                             "noise": task.true_model.noise_summary()}
    methods = (["kalman"] if task.linear else []) + list(args.posteriors)
    stages = tqdm(total=(2 * len(methods) - ("kalman" in methods)) * args.seeds + 1, desc="toy experiment",
                  unit="stage", position=0)
    # gaps at the true model: what inference gets wrong before any model adapts to its posterior
    stages.set_postfix_str("gaps at the true model")
    finished = None                                           # the stage this call just finished, for --commit
    if "true_model_gaps" in done:
        results["true_model"]["gaps"] = done["true_model_gaps"]
    else:
        exact_data = {split: generate(task, n, seed=args.seed + j, dtype=torch.float64)[0]
                      for j, (split, n) in enumerate((("train", args.train_sequences), ("test", args.test_sequences)))}
        exact_sets = {split: minibatch(d, torch.arange(gap_sets[split].batch_size)) for split, d in exact_data.items()}
        results["true_model"]["gaps"] = decompose(task.true_model, "true model", None, exact_sets, exact_data["train"],
                                                  gap_settings(args), curve_split="test")
        for split in exact_sets:
            results["true_model"]["gaps"][split]["own_posterior"] = "none: fresh encoders fitted to the true model"
        finished = "gaps at the true model"
    stages.update(1)
    # --resume: every run finished in an earlier call is in results from the first write on, so that a call stopped at
    # any point leaves results.json with at least what it found there
    runs = {method: {str(k): done[(method, str(k))] for k in range(args.seeds) if (method, str(k)) in done}
            for method in methods}
    stages.update(sum(len(r) * (1 if m == "kalman" else 2) for m, r in runs.items()))

    def publish(stage):                                       # the true-model gaps and every run so far, in seed order
        by_seed = {m: {k: r[k] for k in sorted(r, key=int)} for m, r in runs.items() if r}
        results["methods"] = {m: {**over_seed_runs(list(s.values())), "seeds": s} for m, s in by_seed.items()}
        write(results, args.out, args.commit and stage)

    publish(finished)
    for method, k in [(method, k) for method in methods for k in range(args.seeds) if str(k) not in runs[method]]:
        runs[method][str(k)] = train_and_evaluate(task, method, args, args.seed + 1000 * k + METHODS.index(method),
                                                  train_data, test_data, gap_sets, stages, f"{method} seed {k}")
        publish(f"{method} seed {k}")
    stages.close()
    return results


def finished_runs(out: Path, settings: dict) -> dict:
    """What an earlier call with the same settings wrote to out/results.json: {(method, seed index): entry} and
    'true_model_gaps'. Different settings are refused (naming them): the runs would not be comparable."""
    path = out / "results.json"
    if not path.exists():
        return {}
    try:
        prev = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"--resume: {path} is not valid JSON ({e}); move it away to start afresh")
    before = {**SETTINGS_BEFORE, **prev["settings"]}
    if before.get("protocol") != settings["protocol"]:       # the measurement changed: nothing there can be kept
        print(f"--resume: {path} holds results of protocol {before.get('protocol')} (this is {settings['protocol']}, see "
              f"PROTOCOL in analysis/toy_experiment.py): starting afresh; they stay in git history", file=sys.stderr)
        return {}
    changed = sorted(k for k in set(settings) | set(before) if settings.get(k) != before.get(k))
    if changed:
        raise SystemExit(f"--resume: {path} was written with other settings ({', '.join(changed)}); use the same "
                         f"options, or another --out")
    done = {(m, k): e for m, entry in prev["methods"].items() for k, e in entry.get("seeds", {}).items()}
    if "gaps" in prev.get("true_model", {}):
        done["true_model_gaps"] = prev["true_model"]["gaps"]
    return done


def train_and_evaluate(task, method: str, args, seed: int, train_data, test_data, gap_sets, stages, label: str) -> dict:
    """One method at one seed: train model and posterior, then held-out log p(x), learned noise and gaps."""
    model = new_model(task, seed)      # the model's seed depends on the method and the seed index only
    if method == "kalman":
        q = None
        loss_fn = lambda b: (-model.log_marginal(b).sum(1).mean() / b.length, {})
        params = list(model.parameters())
    else:
        q = toy_posterior(method, args, model)
        loss_fn = lambda b: q.training_loss(model, b, Objective())
        params = list(model.parameters()) + list(q.parameters())
    stages.set_postfix_str(f"train {label}")
    t0 = time.perf_counter()
    try:
        hist, _ = fit(label, loss_fn, params, train_data, args.steps, args.batch_size, args.lr, seed)
        steps_taken, diverged = args.steps, None
    except NonFiniteLoss as e:   # diverged; training is deterministic, so this seed would diverge again
        hist, steps_taken, diverged = [], e.step, f"{e} (of {args.steps})"
        tqdm.write(f"[{label}] training diverged: {diverged}")
    seconds = time.perf_counter() - t0
    stages.update(1)
    entry = {"seed": seed, "train_seconds": seconds, "ms_per_step": 1000 * seconds / max(steps_taken, 1),
             "final_train_elbo_per_step": hist[-1].get("elbo") if hist else None, "noise": model.noise_summary()}
    if diverged:
        entry["training_error"] = diverged
    else:
        stages.set_postfix_str(f"gaps of {label}")
        entry.update(evaluate(model, q, method, args, train_data, test_data, gap_sets, label))
    if method != "kalman":
        stages.update(1)
    (args.out / "models").mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "posterior": None if q is None else q.state_dict()},
               args.out / "models" / f"{label.replace(' ', '_')}.pt")
    return entry


def evaluate(model, q, method: str, args, train_data, test_data, gap_sets, label: str) -> dict:
    """A trained run's held-out log p(x) (and its estimator) and, for a posterior, its gap decomposition; with
    evaluation_error (and what was computed before it) where the model's distributions have non-finite parameters."""
    model.requires_grad_(False)
    proposal = q if q is not None and q.amortized_part() is q else None    # an encoder alone
    out = {}
    try:
        ll, rec = log_px(model, test_data, proposal, iwae_k=args.eval_samples, smc_n=args.eval_samples)
        out.update(test_log_lik=summarize(ll, test_data.length), test_log_lik_estimator=rec)
        if method != "kalman":
            # fresh encoders are fitted on all training sequences, as the model's own posterior was
            out["gaps"] = decompose(model, label, q if q.has_encoder else None, gap_sets, train_data,
                                    gap_settings(args), curve_split="test")
    except ValueError as e:   # a diverged model: non-finite distribution parameters
        out["evaluation_error"] = str(e).splitlines()[0][:300]
        tqdm.write(f"[{label}] evaluation failed: {out['evaluation_error']}")
    return out


def over_seed_runs(runs: list[dict]) -> dict:
    """One method's runs at several seeds as one entry in the format of a single run: every summary (held-out log
    p(x), gaps, ELBOs, refinement curve) as its mean with the standard error over seeds (over_seeds); the rest
    from the first run; warnings and failures of every run, each with its seed index (runs are in seed order) and
    torch seed. Runs that failed (run_failure) are left out of the means and listed in failed_seeds."""
    label = {id(r): f"seed {i} (torch seed {r['seed']})" for i, r in enumerate(runs)}
    why = {id(r): run_failure(r) for r in runs}
    ok = [r for r in runs if not why[id(r)]]
    failed = [f"{label[id(r)]}: {why[id(r)]}" for r in runs if why[id(r)]]
    if not ok:
        return {**runs[0], "failed_seeds": failed}
    out = {"seeds_evaluated": len(ok), "ms_per_step": sum(r["ms_per_step"] for r in ok) / len(ok),
           "noise": {k: sum(r["noise"][k] for r in ok) / len(ok) for k in ok[0]["noise"]},
           "test_log_lik": over_seeds([r["test_log_lik"] for r in ok]),
           "test_log_lik_estimator": ok[0]["test_log_lik_estimator"]}
    if failed:
        out["failed_seeds"] = failed
    if "gaps" in ok[0]:
        out["gaps"] = {split: over_seed_gaps([r["gaps"][split] for r in ok], [label[id(r)] for r in ok])
                       for split in ok[0]["gaps"] if split != "bdmc"}      # BDMC is per model: in "seeds" only
    return out


def over_seed_gaps(results: list[dict], seeds: list[str]) -> dict:
    """The gap decompositions of one split at several seeds as one (see over_seed_runs)."""
    first = results[0]
    common = lambda key: [k for k in first[key] if all(k in r[key] for r in results)]
    out = {**{k: v for k, v in first.items() if k != "values"},
           "gaps": {k: over_seeds([r["gaps"][k] for r in results]) for k in common("gaps")},
           "elbo": {k: over_seeds([r["elbo"][k] for r in results]) for k in common("elbo")},
           "log_px": over_seeds([r["log_px"] for r in results]),
           "warnings": [f"{s}: {w}" for s, r in zip(seeds, results) for w in r["warnings"]],
           "failures": [f"{s}: {f}" for s, r in zip(seeds, results) for f in r["failures"]]}
    if "refinement_curve" in first:
        out["refinement_curve"] = [
            {**row, "elbo": over_seeds([r["refinement_curve"][i]["elbo"] for r in results]),
             "gap": over_seeds([r["refinement_curve"][i]["gap"] for r in results]),
             "seconds": sum(r["refinement_curve"][i]["seconds"] for r in results) / len(results)}
            for i, row in enumerate(first["refinement_curve"])]
    return out


def gap_settings(args) -> GapSettings:
    """The gap options, with the encoders fitted at the toy's batch size and learning rate and its seed."""
    return gap_settings_from(args, TOY_FIXED, encoder_batch_size=args.batch_size, encoder_lr=args.lr, seed=args.seed)


def write(results: dict, out: Path, commit_stage: str | None = None):
    """results.json (atomically), results.md and the PNGs in out; with commit_stage (what just finished), also a
    git commit of those (not of the models)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out / "results.json")
    (out / "results.md").write_text(toy_plots.markdown(results))
    toy_plots.plot_all(results, out)
    if commit_stage:
        runs = sum(len(m.get("seeds", {})) for m in results["methods"].values())
        commit([out / "results.json", out / "results.md", *sorted(out.glob("*.png"))],
               f"toy experiment {results['task']}: {commit_stage} ({runs} (method, seed) runs)", "toy_experiment")


def main(argv=None):
    args = parse_args(argv)
    run(args)
    print((args.out / "results.md").read_text())
    print(f"wrote {args.out}/results.json, results.md and PNGs")


if __name__ == "__main__":
    main()
