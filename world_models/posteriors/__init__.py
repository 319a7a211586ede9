"""Swappable posteriors, selected by name: make_posterior(name, model, **settings)."""
from __future__ import annotations

from .amortized import AmortizedPosterior
from .base import LocalGaussian, Objective, Posterior
from .exact import KalmanPosterior
from .per_sequence import PerSequencePosterior
from .refine import RefineSettings
from .semi_amortized import SemiAmortizedPosterior

POSTERIORS = ("amortized", "amortized_smoothing", "semi_amortized", "per_sequence")


def make_posterior(name: str, model, **settings) -> Posterior:
    """Build the posterior called `name` for `model`. Settings go to its constructor: encoder sizes
    (hidden, embed_dim, rnn_dim, min_std) for the amortized ones; refine_settings (RefineSettings),
    variant ('detached' | 'unrolled') and smoothing_init for semi_amortized; lr, n_samples, window,
    patience, max_steps, init, steps_per_update, train_lr for per_sequence."""
    if name == "amortized":
        return AmortizedPosterior(model, smoothing=False, **settings)
    if name == "amortized_smoothing":
        return AmortizedPosterior(model, smoothing=True, **settings)
    if name == "semi_amortized":
        return SemiAmortizedPosterior(model, **settings)
    if name == "per_sequence":
        return PerSequencePosterior(model, **settings)
    raise ValueError(f"unknown posterior {name!r}; valid choices: {', '.join(POSTERIORS)}")


__all__ = ["POSTERIORS", "make_posterior", "Posterior", "LocalGaussian", "Objective", "RefineSettings",
           "AmortizedPosterior", "SemiAmortizedPosterior", "PerSequencePosterior", "KalmanPosterior"]
