"""The one place where posterior names live: each name's constructor, and how the agent's and the toy
experiment's settings map onto that constructor's. `--help`, error messages and the analysis read from here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .amortized import AmortizedPosterior
from .base import Posterior
from .iterative import IterativeAmortizedPosterior
from .markov import AmortizedMarkovPosterior
from .optimum import PATIENCE, WINDOW
from .per_sequence import PerSequencePosterior
from .refine import RefineSettings
from .semi_amortized import SemiAmortizedPosterior


@dataclass(frozen=True)
class Registered:
    build: Callable[..., Posterior]                   # build(model, **settings)
    agent_settings: Callable[[Any], dict] = lambda cfg: {}   # from an agent.config.AgentConfig
    toy_settings: Callable[[Any], dict] = lambda args: {}    # from analysis.toy_experiment's arguments
    ssm_only: bool = False       # only for models without h_t (the toy SSMs): not an agent posterior


def _refined(source) -> dict:
    """semi_amortized: K training-time refinement steps at step size refine_lr (agent and toy alike)."""
    return {"refine_settings": RefineSettings(steps=source.refine_steps, lr=source.refine_lr)}


REGISTRY: dict[str, Registered] = {
    "amortized": Registered(lambda model, **s: AmortizedPosterior(model, smoothing=False, **s)),
    "amortized_smoothing": Registered(lambda model, **s: AmortizedPosterior(model, smoothing=True, **s)),
    "semi_amortized": Registered(SemiAmortizedPosterior,
                                 lambda cfg: {**_refined(cfg), "refine_every": cfg.refine_every}, _refined),
    "iterative_amortized": Registered(
        IterativeAmortizedPosterior,
        lambda cfg: {"iterations": cfg.refine_steps, "refine_every": cfg.refine_every},
        lambda args: {"iterations": args.refine_steps}),
    "per_sequence": Registered(
        PerSequencePosterior,
        lambda cfg: {"steps_per_update": cfg.refine_steps, "train_lr": cfg.refine_lr},
        lambda args: {"steps_per_update": args.per_sequence_steps, "train_lr": args.refine_lr, "lr": args.q_star_lr,
                      "n_samples": args.q_star_samples, "max_steps": args.q_star_max_steps, "window": WINDOW,
                      "patience": PATIENCE, "lr_halvings": args.q_star_lr_halvings}),
    "amortized_markov": Registered(AmortizedMarkovPosterior, ssm_only=True),
}
POSTERIORS = tuple(name for name, r in REGISTRY.items() if not r.ssm_only)   # every model kind, the agent's choices
SSM_POSTERIORS = tuple(REGISTRY)                                             # models without h_t (toy experiment)

# The roles the gap decomposition and the benchmarks give registered posteriors: fresh filter, smoother and (for
# models without h_t) Markov-Gaussian encoders fitted to a frozen model, the per-sequence optimum q*, and the encoder
# refined by gradient steps.
FILTER, SMOOTHER, MARKOV_ENCODER = "amortized", "amortized_smoothing", "amortized_markov"
Q_STAR, REFINED = "per_sequence", "semi_amortized"


def make_posterior(name: str, model, **settings) -> Posterior:
    """Build the posterior called `name` for `model`. Settings go to its constructor: encoder sizes (hidden, embed_dim,
    rnn_dim, min_std) for the amortized ones; refine_settings (RefineSettings), variant ('detached' |
    'unrolled') and smoothing_init for semi_amortized; iterations, update_hidden and refine_every (and the
    encoder sizes) for iterative_amortized; lr, n_samples, window, patience, max_steps, lr_halvings, init,
    steps_per_update, train_lr for per_sequence; refine_settings and the encoder sizes for amortized_markov
    (models without h_t)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown posterior {name!r}; valid choices: {', '.join(POSTERIORS)} (and for models without "
                         f"h_t: {', '.join(n for n in SSM_POSTERIORS if n not in POSTERIORS)})")
    posterior = REGISTRY[name].build(model, **settings)
    posterior.name = name
    return posterior


def agent_posterior(cfg, model) -> Posterior:
    """The posterior an agent config asks for (cfg.inference), with its settings."""
    return make_posterior(cfg.inference, model, **REGISTRY[cfg.inference].agent_settings(cfg))


def toy_posterior(name: str, args, model) -> Posterior:
    """The posterior `name` with the toy experiment's settings `args`."""
    return make_posterior(name, model, **REGISTRY[name].toy_settings(args))
