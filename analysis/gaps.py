"""Gap decomposition of a frozen model on a set of sequences (docs/definitions.md section 2).

    inference gap      = log p(x) - L[q_phi]
    approximation gap  = log p(x) - L[q*]         q*: best member of a family, per sequence (the tightest found)
    amortization gap   = L[q*] - L[q_phi]         q* in a family that contains q_phi's, started from q_phi's output
    conditioning gap   = L[q_smoother] - L[q_filter]
Each as mean and standard error over sequences, per sequence and per time step (nats).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from world_models import ais, bounds, quadrature
from world_models.ais import AISSettings
from world_models.base import SequenceBatch, SequenceModel, sample_sequences
from world_models.posteriors import LocalGaussian, make_posterior
from world_models.posteriors.base import FamilyKind, local_params
from world_models.posteriors.optimum import OptimumReport, OptimumSettings, optimize
from world_models.posteriors.registry import Q_STAR, REFINED
from world_models.posteriors.refine import RefineSettings, refine
from world_models.rollout import rollout

from .workers import Workers


def summarize(values: torch.Tensor, length: int) -> dict:
    """Mean and standard error over sequences, per sequence and per step."""
    v = values.double()
    n = v.numel()
    sem = float(v.std(unbiased=True) / n ** 0.5) if n > 1 else float("nan")
    return {"mean": float(v.mean()), "sem": sem, "mean_per_step": float(v.mean()) / length,
            "sem_per_step": sem / length, "n": n, "length": length}


def over_seeds(summaries: list[dict]) -> dict:
    """Summaries (summarize) of one quantity from several seeds as one: the mean of their means and its standard
    error over seeds (over sequences where there is one seed), with the mean within-seed standard error over
    sequences beside it (sem_sequences)."""
    means = torch.tensor([x["mean"] for x in summaries], dtype=torch.float64)
    per_step = summaries[0]["length"]
    k = len(summaries)
    sem_seq = sum(x["sem"] for x in summaries) / k
    sem = float(means.std(unbiased=True) / k ** 0.5) if k > 1 else sem_seq
    return {"mean": float(means.mean()), "sem": sem, "mean_per_step": float(means.mean()) / per_step,
            "sem_per_step": sem / per_step, "n": summaries[0]["n"], "length": per_step, "seeds": k, "sem_sequences": sem_seq,
            "sem_sequences_per_step": sem_seq / per_step}


def log_px(model: SequenceModel, batch: SequenceBatch, proposal=None, iwae_k: int = 1000,
           smc_n: int = 1000, exact: bool = True, extra: dict | None = None,
           ais_from: tuple | None = None, ais_settings: AISSettings | None = None,
           workers: Workers | None = None, label: str = "") -> tuple[torch.Tensor, dict]:
    """Exact log p(x) where the model allows it (and `exact`): Kalman on linear-Gaussian models, quadrature on models
    with a 1-d latent and no h_t where its grid check passes (world_models/quadrature.py); otherwise the estimator with the largest mean of
    SMC-N with the bootstrap proposal and, given a proposal, SMC-N and IWAE-K with it (each a stochastic lower
    bound, so the larger is the tighter; the bootstrap guards against a poor proposal). extra {label: (posterior,
    ctx)} adds IWAE-K with those proposals (e.g. q*, which makes the estimate >= L[q*] in expectation);
    ais_from (label, posterior, ctx) adds AIS (world_models/ais.py) from that posterior, e.g. the tightest q*; where
    it is computed it is the estimate (the others are recorded: on an LGSSM, 8 sequences of 10 steps, mean-field
    proposals, IWAE-4000 scattered by +-0.3 nats per sequence around the exact value and the largest of seven
    estimators was 0.26 too high on an independent rerun, while AIS-500x16 was 0.006 below), unless some are
    significantly above it (`above_ais`): then AIS has missed posterior mass and the largest of those, rerun, is
    the estimate. Without AIS the values come from a second, independent run of the estimator with the largest
    mean: picking the largest of several noisy runs biases log p(x) upwards. The estimators are pieces of `workers`
    (analysis/workers.py; named after `label` and themselves; default: one after another in this process).
    Returns (values (B,), record)."""
    if exact and hasattr(model, "log_marginal"):
        return bounds.exact_log_marginal(model, batch), {"estimator": "exact (Kalman)"}
    checked = {}      # the quadrature's record where it was tried and did not pass its grid check
    if exact and quadrature.applies(model, batch):
        values, rec = quadrature.log_marginal(model, batch)
        if rec["trusted"]:
            return values, {"estimator": "exact (quadrature)", "quadrature": rec}
        checked = {"quadrature": rec}
    runs = {f"smc-{smc_n} (bootstrap)": (bounds.smc, model, None, batch, smc_n)}     # {name: (function, *args)}
    if proposal is not None:
        runs[f"smc-{smc_n}"] = (bounds.smc, model, proposal, batch, smc_n)
        runs[f"iwae-{iwae_k}"] = (bounds.iwae, model, proposal, batch, iwae_k)
    for name, (posterior, ctx) in (extra or {}).items():
        runs[f"iwae-{iwae_k} ({name})"] = (bounds.iwae, model, posterior, batch, iwae_k, ctx)
    if ais_from is not None:
        name, posterior, ctx = ais_from
        a = ais_settings or AISSettings()
        runs[f"ais-{a.steps}x{a.chains} ({name})"] = (ais_log_px, model, posterior, batch, ctx, a)
    workers = workers or Workers()
    first = sorted(runs, key=lambda name: not name.startswith("ais-"))       # the longest first, for the workers
    pending = {name: workers.submit(f"{label}log p(x) {name}", timed, *runs[name]) for name in first}
    est, seconds = {}, {}
    for name in runs:
        est[name], seconds[name] = pending[name].result()
    record = {**{f"mean_{k}": float(v.mean()) for k, v in est.items()}, "seconds": seconds, **checked}
    if ais_from is not None:       # AIS, whose trust the BDMC sandwich measures, over the heavy-tailed IWAE / SMC
        best = next(k for k in est if k.startswith("ais-"))
        above = [k for k in est if k != best and excess_over(est[best], est[k]) is not None]
        if not above:
            return est[best], {"estimator": best, **record, "above_ais": above}
        # another stochastic lower bound is significantly above AIS: its chains, started from a unimodal q*, missed
        # posterior mass (on `square`, whose posterior has a mode per sign, AIS from q* was 1.8 nats per sequence
        # below the exact value and bootstrap SMC 0.2; tests/test_gaps.py); the tightest of those is the estimate
        record["above_ais"] = above
        est = {k: est[k] for k in above}
    best = max(est, key=lambda k: float(est[k].mean()))
    values = workers.submit(f"{label}log p(x) {best}, rerun", timed, *runs[best]).result()[0]
    return values, {"estimator": best, **record, "mean_chosen_rerun": float(values.mean())}


def timed(fn, *args):
    """(fn(*args), its wall-clock seconds)."""
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


def ais_log_px(model: SequenceModel, posterior, batch: SequenceBatch, ctx: torch.Tensor, s: AISSettings) -> torch.Tensor:
    """The AIS estimate of log p(x) per sequence (B,) from `posterior` with context ctx."""
    return ais.ais(model, posterior, batch, ctx, s)[0]


@dataclass
class QStar:
    """q* of one family, per sequence: the posterior whose local parameters were optimized (its family is q*'s),
    the optimized context, what the optimization started from, its report, and its wall-clock."""
    posterior: LocalGaussian
    ctx: torch.Tensor
    start: str
    report: OptimumReport
    seconds: float

    def record(self) -> dict:
        return {"family": str(self.posterior.family), "start": self.start, "seconds": self.seconds,
                **{k: v for k, v in asdict(self.report).items() if k != "trace"}, "trace_per_step": self.report.trace}


def as_refinable(model: SequenceModel, posterior, lr: float = 0.05) -> LocalGaussian:
    """A posterior with local parameters that starts at `posterior`'s output: `posterior` itself if it has local
    parameters, otherwise the registry's gradient-refined posterior (REFINED) with `posterior` as its encoder, whose
    family is the encoder's with free per-step offsets (offset 0 = the encoder)."""
    if posterior.refinable:
        return posterior
    refined = make_posterior(REFINED, model, refine_settings=RefineSettings(steps=0, lr=lr))
    refined.encoder = posterior
    return refined


def same_family_q_star(model: SequenceModel, batch: SequenceBatch, posterior, s: OptimumSettings) -> QStar:
    """q* over the family of `posterior` with free per-step offsets, started from the posterior's own output (its
    context where it has local parameters, e.g. semi-amortized after its K steps; the encoder at offset 0
    otherwise): a family that contains the posterior, so L[q*] >= L[posterior] up to Monte Carlo error.
    Where that family is the mean-field one (an encoder on a model without h_t: mean and log std with free offsets
    are any mean and log std), q* is optimized over (mu_t, log sigma_t) from the posterior's own, with the same Adam
    steps (the ELBO's gradient w.r.t. an offset is its gradient w.r.t. the parameter it shifts), without
    evaluating the encoder at every step."""
    t0 = time.perf_counter()
    if posterior.family.kind is FamilyKind.MEAN_FIELD:
        local = make_posterior(Q_STAR, model).to(next(model.parameters()).dtype)
        lam0 = local_params(moments_along_rollout(model, posterior, batch))
    else:
        local = as_refinable(model, posterior)
        with torch.no_grad():
            lam0 = posterior.context(model, batch) if posterior.refinable else local.initial_params(model, batch)
    ctx, report = optimize(model, local, batch, lam0, s)
    return QStar(local, ctx, f"its output ({posterior.describe()})", report, time.perf_counter() - t0)


def moments_along_rollout(model: SequenceModel, posterior, batch: SequenceBatch):
    """One rollout of `posterior` on `batch` (no gradient): its q_mean and q_std (B, T, Dz) start q* runs."""
    with torch.no_grad():
        return rollout(model, posterior, batch, posterior.context(model, batch))


def mean_field_q_star(model: SequenceModel, batch: SequenceBatch, q_star: LocalGaussian, init=None) -> QStar:
    """q* in the mean-field family (q_star, a per_sequence posterior, with its settings), started from the mean and
    log std along one rollout of the posterior `init` (or from q_star's own init)."""
    t0 = time.perf_counter()
    lam0 = None if init is None else local_params(moments_along_rollout(model, init, batch))
    ctx, report = q_star.optimize(model, batch, lam0)
    start = q_star.init if init is None else f"the mean and std along one rollout of {init.describe()}"
    return QStar(q_star, ctx, start, report, time.perf_counter() - t0)


def excess_over(log_p: torch.Tensor, L: torch.Tensor) -> float | None:
    """Mean of L - log p(x) per sequence if it is above 0 by more than 3 standard errors (an ELBO cannot exceed
    log p(x): the log p(x) estimate is too low there), else None."""
    diff = (L - log_p).double()
    sem = float(diff.std() / len(diff) ** 0.5) if len(diff) > 1 else 0.0
    return float(diff.mean()) if float(diff.mean()) > 3 * sem else None


def gap_decomposition(model: SequenceModel, batch: SequenceBatch, posteriors: dict, q_stars: dict[str, QStar],
                      log_p: torch.Tensor, n_samples: int = 1000, own: str | None = None) -> dict:
    """posteriors: {label: posterior}; q_stars: {label: QStar}, where a label shared with `posteriors` is the q* of
    that posterior's family (its amortization gap is L[q*[label]] - L[label]), others (e.g. 'mean-field') are
    further families. The approximation gap uses the q* with the largest mean ELBO; approximation[label] every
    one. Labels 'filter' and 'smoother' give the conditioning gap; `own` names the posterior reported as the
    run's own. Every ELBO is checked against log p(x) (flagged in `above_log_px` and `warnings`), and an
    amortization gap below -3 standard errors is a failed check (`failures`): q* did not reach the posterior it
    should contain, so that gap is not a result."""
    T = batch.length
    elbos = {f"q*[{k}]": bounds.elbo(model, q.posterior, batch, n_samples, ctx=q.ctx) for k, q in q_stars.items()}
    for label, q in posteriors.items():
        elbos[label] = bounds.elbo(model, q, batch, n_samples)
    tightest = max(q_stars, key=lambda k: float(elbos[f"q*[{k}]"].mean()))
    gaps = {"approximation": log_p - elbos[f"q*[{tightest}]"]}
    gaps.update({f"approximation[{k}]": log_p - elbos[f"q*[{k}]"] for k in q_stars})
    for label in posteriors:
        gaps[f"inference[{label}]"] = log_p - elbos[label]
        if label in q_stars:
            gaps[f"amortization[{label}]"] = elbos[f"q*[{label}]"] - elbos[label]
    if "filter" in posteriors and "smoother" in posteriors:
        gaps["conditioning"] = elbos["smoother"] - elbos["filter"]
    if own is not None:
        gaps["inference"] = gaps[f"inference[{own}]"]
        if own in q_stars:
            gaps["amortization"] = gaps[f"amortization[{own}]"]
    summaries = {k: summarize(v, T) for k, v in gaps.items()}
    above = {label: e / T for label, L in elbos.items() if (e := excess_over(log_p, L)) is not None}
    warnings = [f"the log p(x) estimate is below L[{label}] by {e:.3f} nats per step: log p(x) is underestimated, "
                f"so the inference and approximation gaps are unreliable" for label, e in above.items()]
    failures = [f"amortization gap of {k[13:-1]} is {g['mean_per_step']:.3f} ± {g['sem_per_step']:.3f} nats per step, "
                f"below -3 standard errors: its q* did not reach the posterior its family contains"
                for k, g in summaries.items() if k.startswith("amortization[") and g["mean"] < -3 * g["sem"]]
    return {"gaps": summaries, "warnings": warnings, "failures": failures, "above_log_px": above,
            "elbo": {k: summarize(v, T) for k, v in elbos.items()}, "tightest_q_star": tightest,
            "families": {**{label: str(q.family) for label, q in posteriors.items()},
                         **{f"q*[{k}]": str(q.posterior.family) for k, q in q_stars.items()}},
            "q_star": {k: q.record() for k, q in q_stars.items()},
            "log_px": summarize(log_p, T), "n_sequences": batch.batch_size, "elbo_samples": n_samples,
            "values": {k: v.double().tolist() for k, v in {**elbos, "log_px": log_p}.items()}}


def bdmc_sandwich(model: SequenceModel, actions: torch.Tensor, encoder, q_settings: OptimumSettings,
                  s: AISSettings) -> dict:
    """The BDMC sandwich (Grosse et al. 2015) on sequences simulated from the frozen model with `actions` (B, T, A):
    forward AIS from the q* of `encoder`'s family (free per-step offsets from its output, q_settings) is a stochastic
    lower bound of log p(x), reverse AIS from the latents that generated each sequence an upper bound. The width
    says how far any log p(x) estimate of these settings can be trusted on this model."""
    t0 = time.perf_counter()
    with torch.no_grad():
        z, x = sample_sequences(model, actions)
    sim = SequenceBatch(x, actions, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device),
                        index=torch.arange(x.shape[0], device=x.device))
    q = same_family_q_star(model, sim, encoder, q_settings)
    lower, rec = ais.ais(model, q.posterior, sim, q.ctx, s)
    upper, rec_rev = ais.reverse_ais(model, q.posterior, sim, q.ctx, z, s)
    T = sim.length
    return {"lower": summarize(lower, T), "upper": summarize(upper, T), "width": summarize(upper - lower, T),
            "elbo_q_star": summarize(bounds.elbo(model, q.posterior, sim, 1000, ctx=q.ctx), T),
            "q_star_family": str(q.posterior.family),
            "acceptance": {"forward": rec["acceptance"], "reverse": rec_rev["acceptance"]},
            "settings": asdict(s), "sequences": sim.batch_size, "seconds": time.perf_counter() - t0}


def refinement_curve(model: SequenceModel, batch: SequenceBatch, posterior: LocalGaussian,
                     steps=(0, 1, 5, 20, 100), eval_samples: int = 1000, reference: torch.Tensor | None = None,
                     log_p: torch.Tensor | None = None, **refine_overrides) -> list[dict]:
    """L[q_K] after K refinement steps from the amortized init, with the wall-clock of init + K steps.
    One refinement run to the largest K, read off at every K asked for, so the wall-clock is that of the same
    optimization and grows with K (after an untimed warm-up pass). With `reference` (e.g. L[q*] per sequence),
    also the remaining gap reference - L[q_K]; with log_p (log p(x) per sequence), each point is checked against it
    (`above_log_px`: L[q_K] - log p(x) per step where significantly above, else None). refine_overrides (lr, n_samples, optimizer, ...) replace the
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
        if log_p is not None:
            excess = excess_over(log_p, L)
            row["above_log_px"] = None if excess is None else excess / batch.length
        rows.append(row)
    return rows
