"""Everything the gap decomposition of one frozen model needs, for any SequenceModel:
fresh filter and smoother encoders fitted to the frozen model (the smoother is fine-tuned from the
fitted filter, with zero weight on the future at the start, for as many steps: the conditioning gap is
what the future adds), q* per sequence, log p(x), and the amortization gap after K refinement steps.

Used by the toy experiment (analysis.toy_experiment) and by the command for trained world models
(analysis.world_model_gaps); the gap definitions themselves are in analysis.gaps.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, fields

import torch
from tqdm import tqdm

from agent.config import flag

from world_models import bounds
from world_models.ais import AISSettings
from world_models.base import SequenceBatch, SequenceModel
from world_models.posteriors import Objective, make_posterior
from world_models.posteriors.optimum import PATIENCE, WINDOW
from world_models.posteriors.registry import FILTER, MARKOV_ENCODER, Q_STAR, SMOOTHER
from world_models.posteriors.losses import frozen
from world_models.training import minibatch, train

from .gaps import (as_refinable, bdmc_sandwich, gap_decomposition, log_px, mean_field_q_star, refinement_curve,
                   same_family_q_star)
from .workers import PieceStore, Workers, piece_seed


def _setting(default, help: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class GapSettings:
    """Budgets of one decomposition; each field's help is what the commands' --help shows."""
    eval_samples: int = _setting(1000, "samples of every final ELBO, IWAE-K and SMC-N (Cremer used 5000)")
    q_star_lr: float = _setting(0.05, "Adam step size of every q* optimizer")
    q_star_samples: int = _setting(20, "samples per q* optimizer step (every q*)")
    q_star_max_steps: int = _setting(1500, f"step budget of each q* (stopping windows of {WINDOW} steps, patience "
                                           f"{PATIENCE})")
    q_star_lr_halvings: int = _setting(0, "times each q* halves its step size on a plateau before it stops (3: "
                                          "vsmc_lgssm's Markov q* 0.041 -> 0.013 nats per step from log p(x), the "
                                          "RSSM's +0.0005; about 3-4x the q* time)")
    encoder_steps: int = _setting(2400, "steps to fit each fresh filter / smoother encoder to the frozen model")
    encoder_batch_size: int = _setting(64, "sequences per fresh-encoder fitting step")
    encoder_lr: float = _setting(1e-2, "Adam step size of the fresh filter encoder (its peak, with the cosine "
                                       "schedule)")
    # at a constant 1e-2 the filter fitted to a cartpole study model (amortized, seed 1) wandered between 4.3 and
    # 11.4 nats per step (validation ELBO every 100 steps) and ended wherever step 800 fell; with the cosine over 2400
    # steps it rose monotonically from step 900 to 12.41 (held out 12.94, the run's own encoder 11.93): the 800-step
    # fits had made the fresh filter look worse than the jointly trained encoder (docs/definitions.md section 2)
    encoder_lr_schedule: str = _setting("cosine", "step size of the fresh encoders' fits: cosine = decayed from its "
                                                  "peak to 0 over encoder_steps, constant = the fits of the study's "
                                                  "runs before session 22", choices=("cosine", "constant"))
    # the smoother is fine-tuned from the fitted filter: at 1e-2, Adam's first steps undid the filter's fit (cartpole
    # study model: held-out ELBO -4.22 after 150 steps from -4.10 at the start), at 1e-3 it improved (-3.87)
    smoother_lr: float = _setting(1e-3, "Adam step size of the fresh smoother, fine-tuned from the fitted filter")
    curve_steps: tuple = _setting((0, 1, 5, 20, 100), "refinement step counts K of the amortization-gap curve")
    curve_lr: float = _setting(0.05, "refinement step size (Adam) for the curve")
    curve_samples: int = _setting(8, "samples per refinement step for the curve")
    ais_steps: int = _setting(1000, "AIS intermediate distributions, from the tightest q* (0: no AIS; Cremer used "
                                    "10,000)")
    ais_chains: int = _setting(16, "AIS chains per sequence (Cremer used 100)")
    ais_leapfrog: int = _setting(2, "leapfrog steps per HMC transition of AIS")
    bdmc_sequences: int = _setting(4, "sequences simulated from the frozen model for the BDMC sandwich (0: none)")
    seed: int = _setting(0, "seed of the windows, the encoders' initialization and every sample")
    workers: int = _setting(1, "processes for the independent pieces (encoder and q* fits, log p(x) estimators, the "
                               "BDMC sandwich); the numbers are the same with any number")

    def ais(self) -> AISSettings:
        return AISSettings(chains=self.ais_chains, steps=self.ais_steps, leapfrog=self.ais_leapfrog)
    exact_log_px: bool = _setting(True, "use the exact log p(x) where the model has one (else SMC / IWAE)")


def gap_option_names(exclude: tuple = ()) -> list[str]:
    """The GapSettings fields a command sets from its own options (all but `exclude`)."""
    return [f.name for f in fields(GapSettings) if f.name not in exclude]


def add_gap_arguments(p, exclude: tuple = ()) -> None:
    """Each GapSettings field but `exclude` as a command-line option with its default and help."""
    defaults = GapSettings()
    for f in fields(GapSettings):
        if f.name not in exclude:
            default = getattr(defaults, f.name)
            if isinstance(default, tuple):
                p.add_argument(flag(f.name), type=int, nargs="+", default=list(default), help=f.metadata["help"])
            else:
                p.add_argument(flag(f.name), type=type(default), default=default, choices=f.metadata["choices"],
                               help=f.metadata["help"])


def check_gap_arguments(p, args) -> None:
    """The checks every command with add_gap_arguments applies."""
    if min(args.curve_steps) < 0:
        p.error("--curve-steps must be >= 0")
    if args.q_star_lr_halvings < 0:
        p.error("--q-star-lr-halvings must be >= 0")
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if args.ais_steps < 0 or args.bdmc_sequences < 0:
        p.error("--ais-steps and --bdmc-sequences must be >= 0 (0: none)")


def gap_settings_from(args, exclude: tuple = (), **overrides) -> GapSettings:
    """GapSettings from a parsed command line (the options add_gap_arguments(p, exclude) added) and overrides."""
    values = {n: tuple(getattr(args, n)) if n == "curve_steps" else getattr(args, n) for n in gap_option_names(exclude)}
    return GapSettings(**{**values, **overrides})


def fit(label: str, loss_fn, params, data: SequenceBatch, steps: int, batch_size: int, lr: float, seed: int,
        after_step=None, skip_nonfinite: bool = False, cosine_decay: bool = False):
    """Adam on loss_fn over minibatches of data, with a progress bar; after_step(step), if given, is called after
    each step; skip_nonfinite and cosine_decay as in world_models.training.train. Returns (history, seconds)."""
    bar = tqdm(total=steps, desc=f"train {label}", unit="step", mininterval=2)

    def progress(step, m):
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(elbo=f"{m.get('elbo', -m['loss']):.3f}")
        if after_step is not None:
            after_step(step)
    t0 = time.perf_counter()
    try:
        hist = train(loss_fn, params, data, steps, batch_size, lr=lr, seed=seed, progress=progress,
                     skip_nonfinite=skip_nonfinite, cosine_decay=cosine_decay)
    finally:                       # also when training stops at a non-finite loss: the bar does not dangle
        bar.close()
    return hist, time.perf_counter() - t0


class EncoderCheckpoints:
    """The fresh-encoder fit's guard against ending worse than it was: every CHECK_EVERY steps (and at the last) the
    encoder's ELBO on a fixed validation batch (the first CHECK_SEQUENCES fitting sequences, CHECK_SAMPLES samples,
    fixed seed, drawn outside the global random stream so that the fit itself is unchanged) and a copy of its weights;
    at the end the best checkpoint replaces the last iterate only where the last is worse by more than 3 standard
    errors (paired over sequences). On square's true model, Markov-Gaussian encoders fitted at lr 1e-2 ended at -658
    and -369 nats per sequence for 2 of 6 initializations (the others -65 to -80): their sampled z_t = A_t z_{t-1} + ...
    can run away, and x = z^2 makes that quartic; the last iterate was then reported as a 34 nats-per-step gap."""
    CHECK_EVERY, CHECK_SEQUENCES, CHECK_SAMPLES = 50, 64, 16

    def __init__(self, model: SequenceModel, encoder: torch.nn.Module, data: SequenceBatch, steps: int, seed: int):
        self.model, self.encoder, self.steps, self.seed = model, encoder, steps, seed
        self.batch = minibatch(data, torch.arange(min(self.CHECK_SEQUENCES, data.batch_size)))
        self.checks: list[tuple[int, torch.Tensor, dict]] = []      # (step, ELBO per sequence, weights)

    def __call__(self, step: int) -> None:
        if (step + 1) % self.CHECK_EVERY and step + 1 != self.steps:
            return
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(self.seed)
            try:
                value = bounds.elbo(self.model, self.encoder, self.batch, self.CHECK_SAMPLES).nan_to_num(nan=-math.inf)
            except ValueError:    # non-finite distribution parameters (refused by torch's validation): no ELBO
                value = torch.full((self.batch.batch_size,), -math.inf)
        self.checks.append((step + 1, value, {k: v.clone() for k, v in self.encoder.state_dict().items()}))

    def keep_best(self) -> dict:
        """Load the best checkpoint where the last is significantly worse; returns the record of that decision."""
        T = self.batch.length
        best_step, best, weights = max(self.checks, key=lambda c: float(c[1].mean()))
        last_step, last, _ = self.checks[-1]
        d = best - last                                     # paired over the validation sequences
        worse = not math.isfinite(float(last.mean())) or float(d.mean()) > 3 * float(d.std()) / len(d) ** 0.5
        if worse:
            self.encoder.load_state_dict(weights)
        return {"checkpoints": len(self.checks), "best_step": best_step, "best_elbo_per_step": float(best.mean()) / T,
                "last_elbo_per_step": float(last.mean()) / T, "kept": "best" if worse else "last",
                "validation": f"{len(d)} fitting sequences x {self.CHECK_SAMPLES} samples"}


def smoother_from_filter(model: SequenceModel, filt) -> torch.nn.Module:
    """An `amortized_smoothing` encoder that computes exactly what the filter `filt` does: the filter's
    weights, and zero weights on the summary of the future x_{>t} (the last columns of the head's first
    layer, whose input is [h_t, x_t features, ..., future summary]). Fitting it from there can only add
    what the future tells, so the conditioning gap is not swamped by the smoother's slower start."""
    sm = make_posterior(SMOOTHER, model).to(next(filt.parameters()).dtype)
    state = sm.state_dict()
    for key, value in filt.state_dict().items():
        if key == "head.0.weight":
            state[key] = torch.cat([value, torch.zeros_like(state[key][:, value.shape[1]:])], 1)
        else:
            state[key] = value
    sm.load_state_dict(state)
    return sm


def fresh_encoder(name: str, model: SequenceModel, data: SequenceBatch, s: GapSettings, init=None, lr=None):
    """An amortized encoder (`amortized`, `amortized_smoothing` or `amortized_markov`) fitted to a frozen model, from a new
    initialization or from `init` (an encoder of that type), with step size lr (default s.encoder_lr; decayed to 0 over
    the fit by a cosine unless s.encoder_lr_schedule is "constant"); its last iterate unless an earlier checkpoint is
    significantly better (EncoderCheckpoints; q.fit_record says which). A step with a non-finite gradient is skipped
    and counted (fit_record's skipped_steps), not fatal: on square, the Markov encoder fitted to semi_amortized seed
    0's learned model met a NaN gradient (finite loss) at step 449 of 800, which stopped the whole toy experiment."""
    q = init if init is not None else make_posterior(name, model).to(next(model.parameters()).dtype)
    checkpoints = EncoderCheckpoints(model, q, data, s.encoder_steps, s.seed + 8)
    with frozen(model):
        hist, q.fit_seconds = fit(f"{name} encoder (frozen model)", lambda b: q.training_loss(model, b, Objective()),
                                  q.parameters(), data, s.encoder_steps, min(s.encoder_batch_size, data.batch_size),
                                  lr or s.encoder_lr, s.seed + 7, after_step=checkpoints, skip_nonfinite=True,
                                  cosine_decay=s.encoder_lr_schedule == "cosine")
        q.fit_record = {**checkpoints.keep_best(), "skipped_steps": sum("skipped" in h for h in hist)}
    return q


def fresh_filter_and_smoother(model: SequenceModel, data: SequenceBatch, s: GapSettings) -> dict:
    """{"filter": a fresh filter fitted to the frozen model, "smoother": a fresh smoother fine-tuned from it}."""
    filt = fresh_encoder(FILTER, model, data, s)
    return {"filter": filt, "smoother": fresh_encoder(SMOOTHER, model, data, s, init=smoother_from_filter(model, filt),
                                                      lr=s.smoother_lr)}


def decompose(model: SequenceModel, own_name: str, own, gap_sets: dict[str, SequenceBatch], encoder_data: SequenceBatch,
              s: GapSettings, curve_split: str, label: str = "", store: PieceStore | None = None) -> dict:
    """Gaps of a frozen model on each gap set {split: batch}: its own posterior `own` (None for
    per_sequence, whose posterior is q* itself), fresh filter / smoother encoders fitted on encoder_data, and
    q* per sequence in each of their families (free per-step offsets from each one's output), in the mean-field
    family and, for models without h_t, in the Markov-Gaussian family (which contains the exact LGSSM posterior).
    log p(x): the best of bootstrap SMC, SMC and IWAE with the smoother as proposal, and IWAE with each q*
    as proposal. On `curve_split`, also L[q*] - L[q_K] after K refinement steps from the own encoder (or the fresh
    filter where the run has none), against the q* of that encoder's family. Failed checks (an amortization gap
    below -3 standard errors) are printed to stderr. The encoder fits, q* fits, log p(x) estimators and the BDMC
    sandwich run as s.workers seeded pieces (analysis/workers.py): the numbers do not depend on s.workers. With a
    `store`, pieces it holds are loaded instead of run (out["resumed_pieces"]: their seconds when they ran) and
    each piece run is stored: an analysis killed part way resumes, with the same numbers."""
    tag = label or own_name
    q_star = make_posterior(Q_STAR, model, lr=s.q_star_lr, n_samples=s.q_star_samples, max_steps=s.q_star_max_steps,
                            window=WINDOW, patience=PATIENCE, lr_halvings=s.q_star_lr_halvings)
    tqdm.write(f"[{tag}] fitting fresh encoders to the frozen model and q* in each family "
               f"({s.workers} worker process{'es' if s.workers > 1 else ''}) ...")
    with Workers(s.workers, s.seed, store) as w:
        own_q = {split: {"own": w.submit(f"{split} q*[own]", same_family_q_star, model, batch, own, q_star.fit)}
                 for split, batch in gap_sets.items()} if own is not None else {}
        fits = w.submit("fresh filter and smoother", fresh_filter_and_smoother, model, encoder_data, s)
        markov = None
        if not model.deter_dim:     # the Markov-Gaussian encoder ignores h_t: for the toy SSMs
            markov = w.submit("fresh markov encoder", fresh_encoder, MARKOV_ENCODER, model, encoder_data, s)
        posteriors = fits.result()
        if markov is not None:
            posteriors["markov"] = markov.result()
        if own is not None:
            posteriors["own"] = own
        pending = {split: {**{k: w.submit(f"{split} q*[{k}]", same_family_q_star, model, batch, q, q_star.fit)
                              for k, q in posteriors.items() if k != "own"},
                           **own_q.get(split, {}),
                           "mean-field": w.submit(f"{split} q*[mean-field]", mean_field_q_star, model, batch, q_star,
                                                  posteriors["smoother"])}
                   for split, batch in gap_sets.items()}
        bdmc = None
        if s.bdmc_sequences and not (s.exact_log_px and hasattr(model, "log_marginal")) and s.ais_steps:
            actions = next(iter(gap_sets.values())).actions[:s.bdmc_sequences]
            bdmc = w.submit("bdmc", bdmc_sandwich, model, actions, posteriors["smoother"], q_star.fit, s.ais())
        out = {split: split_gaps(model, own, posteriors, pending[split], batch, s, split, split == curve_split, tag, w)
               for split, batch in gap_sets.items()}
        if bdmc is not None:
            tqdm.write(f"[{tag}] BDMC sandwich on {s.bdmc_sequences} simulated sequences ...")
            out["bdmc"] = bdmc.result()
    if w.resumed:
        tqdm.write(f"[{tag}] resumed {len(w.resumed)} pieces stored by an earlier call: {', '.join(w.resumed)}")
        out["resumed_pieces"] = w.resumed
    return out


def split_gaps(model: SequenceModel, own, posteriors: dict, q_star_pieces: dict, batch: SequenceBatch, s: GapSettings,
               split: str, with_curve: bool, tag: str, w: Workers) -> dict:
    """The decomposition on one gap set, once its q* pieces {family: future of a QStar} are done (decompose)."""
    parts = [f"q*[{k}]" for k in q_star_pieces] + ["log p(x)", "ELBOs"] + (["refinement curve"] if with_curve else [])
    bar = tqdm(parts, desc=f"[{tag}] gaps on {batch.batch_size} {split} sequences", unit="part",
               bar_format="{desc}: {n_fmt}/{total_fmt} parts [{elapsed}{postfix}]")
    q_stars = {}
    for k, piece in q_star_pieces.items():     # q* of each posterior's own family, from its output
        bar.set_postfix_str(f"q* in the {k} family")
        q_stars[k] = piece.result()
        bar.update(1)
    bar.set_postfix_str(f"log p(x): SMC-{s.eval_samples}, IWAE-{s.eval_samples}"
                        + (f", AIS-{s.ais_steps}" if s.ais_steps else ""))
    best = max(q_stars, key=lambda k: q_stars[k].report.elbo_per_step)    # the tightest q* by its own estimate
    lp, rec = log_px(model, batch, posteriors["smoother"], iwae_k=s.eval_samples, smc_n=s.eval_samples,
                     exact=s.exact_log_px, extra={f"q*[{k}]": (q.posterior, q.ctx) for k, q in q_stars.items()},
                     ais_from=(f"q*[{best}]", q_stars[best].posterior, q_stars[best].ctx) if s.ais_steps else None,
                     ais_settings=s.ais() if s.ais_steps else None, workers=w, label=f"{split} ")
    bar.update(1)
    bar.set_postfix_str(f"{s.eval_samples}-sample ELBOs")
    with torch.random.fork_rng():
        torch.manual_seed(piece_seed(s.seed, f"{split} ELBOs and refinement curve"))
        res = gap_decomposition(model, batch, posteriors, q_stars, lp, s.eval_samples,
                                own="own" if own is not None else None)
        res["log_px_estimator"] = rec
        res["encoder_fit_seconds"] = {k: q.fit_seconds for k, q in posteriors.items() if k != "own"}
        res["encoder_fit"] = {k: q.fit_record for k, q in posteriors.items() if k != "own"}
        res["warnings"] += [f"{k} is above AIS by more than 3 standard errors: AIS missed posterior mass (a mode its "
                            f"chains from q* did not reach, or too few --ais-steps); log p(x) is {rec['estimator']}"
                            for k in rec.get("above_ais", [])]
        res["own_posterior"] = "q* itself (per-sequence optimization)" if own is None else own.describe()
        bar.update(1)
        if with_curve:
            bar.set_postfix_str(f"refinement curve K = {', '.join(map(str, s.curve_steps))}")
            start = "own" if own is not None else "filter"
            refinable = as_refinable(model, posteriors[start], s.curve_lr)
            res["refinement_curve"] = refinement_curve(
                model, batch, refinable, s.curve_steps, s.eval_samples,
                reference=torch.tensor(res["values"][f"q*[{start}]"]), log_p=lp, lr=s.curve_lr,
                n_samples=s.curve_samples)
            res["refinement_init"] = "own encoder" if start == "own" else "fresh filter encoder"
            res["refinement_settings"] = {"lr": s.curve_lr, "n_samples": s.curve_samples,
                                          "optimizer": refinable.refine_settings.optimizer}
            for row in res["refinement_curve"]:
                if row["above_log_px"] is not None:
                    res["above_log_px"][f"refined K={row['K']}"] = row["above_log_px"]
                    res["warnings"].append(f"the log p(x) estimate is below L[q_K] at K = {row['K']} by "
                                           f"{row['above_log_px']:.3f} nats per step: log p(x) is underestimated")
            bar.update(1)
    bar.close()
    for failure in res["failures"]:
        tqdm.write(f"FAILED CHECK [{tag}, {split}]: {failure}", file=sys.stderr)
    return res
