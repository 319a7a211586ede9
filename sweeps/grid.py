"""Expanding a sweep grid into one AgentConfig per run, and naming the runs' directories."""
from __future__ import annotations

import re
import typing
from dataclasses import dataclass, fields
from itertools import product

from agent.config import AgentConfig

OWN_OPTIONS = {"env": "--env", "inference": "--inference", "seed": "--seeds", "wandb": "--wandb"}  # not --grid/--set
SETTINGS = tuple(f.name for f in fields(AgentConfig) if f.name not in OWN_OPTIONS)
_TYPES = typing.get_type_hints(AgentConfig)


class SweepError(ValueError):
    """Bad sweep input; the message names what was wrong and the valid choices."""


@dataclass(frozen=True)
class RunSpec:
    name: str             # the run directory's name, unique within the sweep
    config: AgentConfig


def parse_value(key: str, text: str):
    """`text` as a value of AgentConfig field `key`, parsed with the field's type ("none" for an optional None)."""
    if key in OWN_OPTIONS:
        raise SweepError(f"{key} has its own option: use {OWN_OPTIONS[key]}")
    if key not in SETTINGS:
        raise SweepError(f"unknown setting {key!r}; valid settings: {', '.join(SETTINGS)}")
    args = typing.get_args(_TYPES[key])
    optional = type(None) in args
    kind = next(a for a in args if a is not type(None)) if optional else _TYPES[key]
    if text.lower() == "none":
        if optional:
            return None
        raise SweepError(f"{key} cannot be none: expected {kind.__name__}")
    if kind is bool:    # bool("0") would be True
        if text.lower() not in ("0", "1", "false", "true"):
            raise SweepError(f"bad value {text!r} for {key}: expected 0 or 1")
        return text.lower() in ("1", "true")
    try:
        return kind(text)
    except ValueError:
        raise SweepError(f"bad value {text!r} for {key}: expected {kind.__name__}"
                        + (" or none" if optional else "")) from None


def parse_assignments(items: list[str], option: str, multiple: bool) -> dict:
    """KEY=VALUE (or KEY=V1,V2,... when `multiple`) strings as {key: value} (or {key: [values]})."""
    parsed = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not text:
            raise SweepError(f"{option} {item!r}: expected KEY=" + ("V1,V2,..." if multiple else "VALUE"))
        if key in parsed:
            raise SweepError(f"{option} {key} is given twice")
        parsed[key] = ([parse_value(key, t.strip()) for t in text.split(",")] if multiple
                       else parse_value(key, text.strip()))
    return parsed


def run_name(env: str, inference: str, grid_values: dict, seed: int) -> str:
    """<env>-<inference>[-<key><value> for each grid key, sorted]-s<seed>, with only filesystem-safe characters."""
    parts = [env, inference] + [f"{key}{'none' if value is None else value}"
                                for key, value in sorted(grid_values.items())] + [f"s{seed}"]
    return "-".join(re.sub(r"[^A-Za-z0-9._+-]", "_", part) for part in parts)


def expand(envs: list[str], inferences: list[str], seeds: list[int], grid: dict[str, list],
           fixed: dict) -> list[RunSpec]:
    """One RunSpec per (env, inference, grid point, seed), each config validated by AgentConfig."""
    overlap = sorted(set(grid) & set(fixed))
    if overlap:
        raise SweepError(f"{', '.join(overlap)} given both in --grid and --set")
    keys = sorted(grid)
    specs, names = [], set()
    for env, inference, values, seed in product(envs, inferences, product(*(grid[k] for k in keys)), seeds):
        point = dict(zip(keys, values))
        name = run_name(env, inference, point, seed)
        if name in names:
            raise SweepError(f"two runs would share the run directory {name}: remove the repeated value")
        names.add(name)
        try:
            config = AgentConfig(**fixed, **point, env=env, inference=inference, seed=seed)
        except ValueError as e:
            raise SweepError(f"run {name}: {e}") from None
        specs.append(RunSpec(name, config))
    return specs
