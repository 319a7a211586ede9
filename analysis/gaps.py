"""Gap decomposition of a frozen model on a set of sequences (docs/definitions.md section 2).

    inference gap      = log p(x) - L[q_phi]
    approximation gap  = log p(x) - L[q*]         q*: best member of the family, per sequence
    amortization gap   = L[q*] - L[q_phi]         (same family)
    conditioning gap   = L[q_smoother] - L[q_filter]
Each as mean and standard error over sequences, per sequence and per time step (nats).
"""
from __future__ import annotations

import time

import torch

from world_models import bounds
from world_models.base import SequenceBatch, SequenceModel
from world_models.posteriors import LocalGaussian
from world_models.posteriors.base import local_params
from world_models.posteriors.refine import RefineSettings, refine
from world_models.rollout import rollout


def summarize(values: torch.Tensor, length: int) -> dict:
    """Mean and standard error over sequences, per sequence and per step."""
    v = values.double()
    n = v.numel()
    sem = float(v.std(unbiased=True) / n ** 0.5) if n > 1 else float("nan")
    return {"mean": float(v.mean()), "sem": sem, "mean_per_step": float(v.mean()) / length,
            "sem_per_step": sem / length, "n": n}


def log_px(model: SequenceModel, batch: SequenceBatch, proposal=None, iwae_k: int = 1000,
           smc_n: int = 1000, exact: bool = True, extra: dict | None = None) -> tuple[torch.Tensor, dict]:
    """Exact log p(x) where the model allows it (and `exact`); otherwise the larger on average of SMC-N
    with the bootstrap proposal and, given a proposal, SMC-N and IWAE-K with it (each a stochastic lower
    bound, so the larger is the tighter; the bootstrap guards against a poor proposal). extra {label: (posterior,
    ctx)} adds IWAE-K with those proposals (e.g. q*, which makes the estimate >= L[q*] in expectation).
    Returns (values (B,), record)."""
    if exact and hasattr(model, "log_marginal"):
        return bounds.exact_log_marginal(model, batch), {"estimator": "exact (Kalman)"}
    est = {f"smc-{smc_n} (bootstrap)": bounds.smc(model, None, batch, smc_n)}
    if proposal is not None:
        est[f"smc-{smc_n}"] = bounds.smc(model, proposal, batch, smc_n)
        est[f"iwae-{iwae_k}"] = bounds.iwae(model, proposal, batch, iwae_k)
    for label, (posterior, ctx) in (extra or {}).items():
        est[f"iwae-{iwae_k} ({label})"] = bounds.iwae(model, posterior, batch, iwae_k, ctx=ctx)
    best = max(est, key=lambda k: float(est[k].mean()))
    return est[best], {"estimator": best, **{f"mean_{k}": float(v.mean()) for k, v in est.items()}}


def optimize_q_star(model: SequenceModel, batch: SequenceBatch, q_star: LocalGaussian, init=None):
    """(lambda*, seconds): q* optimized per sequence, started from the output of the posterior `init`
    (mean and log std along one of its rollouts) or from q_star's own init."""
    t0 = time.perf_counter()
    lam0 = None
    if init is not None:
        with torch.no_grad():
            lam0 = local_params(rollout(model, init, batch, init.context(model, batch)))
    return q_star.context(model, batch, lam0=lam0), time.perf_counter() - t0


def gap_decomposition(model: SequenceModel, batch: SequenceBatch, posteriors: dict, q_star: LocalGaussian,
                      log_p: torch.Tensor, n_samples: int = 1000, own: str | None = None,
                      q_star_init: str | None = None, lam_star: torch.Tensor | None = None,
                      q_star_seconds: float | None = None) -> dict:
    """posteriors: {label: posterior}; labels 'filter' and 'smoother' (if present) give the conditioning
    gap; `own` names the posterior whose inference and amortization gaps are reported as such.
    q_star_init names the posterior whose output starts the q* optimization (default: q_star's own
    init). The optimum does not depend on it where the ELBO is concave in lambda (the LGSSM with a
    mean-field family); elsewhere it is a heuristic, recorded in the result. lam_star (with the
    q_star_seconds it took) passes an already optimized q*."""
    T = batch.length
    if lam_star is None:
        lam_star, q_star_seconds = optimize_q_star(model, batch, q_star, posteriors[q_star_init] if q_star_init else None)
    elbos = {"q_star": bounds.elbo(model, q_star, batch, n_samples, ctx=lam_star)}
    for label, q in posteriors.items():
        elbos[label] = bounds.elbo(model, q, batch, n_samples)
    gaps = {"approximation": log_p - elbos["q_star"]}
    for label in posteriors:
        gaps[f"inference[{label}]"] = log_p - elbos[label]
        gaps[f"amortization[{label}]"] = elbos["q_star"] - elbos[label]
    if "filter" in posteriors and "smoother" in posteriors:
        gaps["conditioning"] = elbos["smoother"] - elbos["filter"]
    if own is not None:
        gaps["inference"] = gaps[f"inference[{own}]"]
        gaps["amortization"] = gaps[f"amortization[{own}]"]
    # log p(x) >= every ELBO: an estimate below an ELBO (by more than 3 standard errors of the difference)
    # means the estimator has not converged, and every gap that uses log p(x) is unreliable
    warnings = []
    for label, L in elbos.items():
        diff = (L - log_p).double()
        sem = float(diff.std() / len(diff) ** 0.5) if len(diff) > 1 else 0.0
        if float(diff.mean()) > 3 * sem:
            warnings.append(f"the log p(x) estimate is below L[{label}] by {float(diff.mean()) / T:.3f} nats per step: "
                            f"log p(x) is underestimated, so the inference and approximation gaps are unreliable")
    return {"gaps": {k: summarize(v, T) for k, v in gaps.items()}, "warnings": warnings,
            "elbo": {k: summarize(v, T) for k, v in elbos.items()},
            "log_px": summarize(log_p, T), "n_sequences": batch.batch_size, "elbo_samples": n_samples,
            "q_star_seconds": q_star_seconds, "q_star_init": q_star_init or q_star.init,
            "values": {k: v.double().tolist() for k, v in {**elbos, "log_px": log_p}.items()}}


def refinement_curve(model: SequenceModel, batch: SequenceBatch, posterior: LocalGaussian,
                     steps=(0, 1, 5, 20, 100), eval_samples: int = 1000, reference: torch.Tensor | None = None,
                     **refine_overrides) -> list[dict]:
    """L[q_K] after K refinement steps from the amortized init, with the wall-clock of init + K steps.
    One refinement run to the largest K, read off at every K asked for, so the wall-clock is that of the same
    optimization and grows with K (after an untimed warm-up pass). With `reference` (e.g. L[q*] per sequence),
    also the remaining gap reference - L[q_K]. refine_overrides (lr, n_samples, optimizer, ...) replace the
    posterior's refinement settings."""
    s = RefineSettings(**{**vars(posterior.refine_settings), **refine_overrides, "steps": max(steps)})
    wanted = set(steps)
    with torch.no_grad():
        posterior.initial_params(model, batch)          # warm-up: first-call allocations are not refinement
    t0 = time.perf_counter()
    with torch.no_grad():
        lam0 = posterior.initial_params(model, batch)
    at = {0: (lam0, time.perf_counter() - t0)}

    def keep(k: int, lam: torch.Tensor) -> None:
        if k in wanted:
            at[k] = (lam, time.perf_counter() - t0)
    refine(model, posterior, batch, lam0, s, on_step=keep)
    rows = []
    for K in steps:
        lam, seconds = at[K]
        L = bounds.elbo(model, posterior, batch, eval_samples, ctx=lam)
        row = {"K": K, "seconds": seconds, "elbo": summarize(L, batch.length)}
        if reference is not None:
            row["gap"] = summarize(reference - L, batch.length)
        rows.append(row)
    return rows
