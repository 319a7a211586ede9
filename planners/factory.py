"""Planners by name: make_planner(name, preset=None, **settings)."""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Optional

from . import cem, icem, random_shooting
from .base import Planner

PLANNERS = ("cem", "icem", "random_shooting")
_KINDS = {"cem": (cem.CEMPlanner, cem.CEMSettings, cem.PRESETS),
          "icem": (icem.ICEMPlanner, icem.ICEMSettings, icem.PRESETS),
          "random_shooting": (random_shooting.RandomShootingPlanner, random_shooting.RandomShootingSettings,
                              random_shooting.PRESETS)}


def presets(name: str) -> tuple[str, ...]:
    """The preset names of planner `name`."""
    return tuple(_KINDS[name][2])


def make_planner(name: str, preset: Optional[str] = None, **settings) -> Planner:
    """The planner called `name`, with its settings dataclass's defaults (PlaNet's sizes), or a preset (presets(name):
    "planet", "cpu", and icem's "small"), overridden by `settings` (horizon, candidates, action_low, action_high;
    for cem and icem also iterations, top_k, init_std; for icem noise_beta, keep_elites, shift_elites,
    population_decay, momentum)."""
    if name not in _KINDS:
        raise ValueError(f"unknown planner {name!r}; valid choices: {', '.join(PLANNERS)}")
    planner, settings_cls, presets = _KINDS[name]
    if preset is not None and preset not in presets:
        raise ValueError(f"unknown {name} preset {preset!r}; valid choices: {', '.join(presets)}")
    valid = [f.name for f in fields(settings_cls)]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(f"unknown {name} settings {', '.join(unknown)}; valid settings: {', '.join(valid)}")
    base = presets[preset] if preset is not None else settings_cls()
    return planner(replace(base, **settings))
