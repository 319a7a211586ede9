"""Swappable posteriors, selected by name (registry.py): make_posterior(name, model, **settings)."""
from __future__ import annotations

from .amortized import AmortizedPosterior
from .base import LocalGaussian, Posterior
from .exact import KalmanPosterior
from .losses import Loss, Objective
from .per_sequence import PerSequencePosterior
from .refine import RefineSettings
from .registry import POSTERIORS, REGISTRY, SSM_POSTERIORS, agent_posterior, make_posterior, toy_posterior
from .semi_amortized import SemiAmortizedPosterior

__all__ = ["POSTERIORS", "REGISTRY", "SSM_POSTERIORS", "make_posterior", "agent_posterior", "toy_posterior", "Posterior",
           "LocalGaussian", "Loss", "Objective", "RefineSettings", "AmortizedPosterior", "SemiAmortizedPosterior",
           "PerSequencePosterior", "KalmanPosterior"]
