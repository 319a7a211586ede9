"""Declared ranges for numeric settings: one check, one message format, for every command that takes them."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Mapping


@dataclass(frozen=True)
class Range:
    """A setting's valid values: an integer or a finite real number in [low, high] (either end open if
    asked), or None where `optional` (None then means a default that the setting's help names)."""
    kind: type                  # int or float
    low: float
    high: float = math.inf
    low_open: bool = False      # low itself is not allowed
    high_open: bool = False
    optional: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        if self.high == math.inf:
            where = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        else:
            where = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        return f"{what} {where}"

    def admits(self, value) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


def check_ranges(values: Mapping[str, object], ranges: Mapping[str, Range],
                 label: Callable[[str], str] = str) -> None:
    """Raise ValueError for the first value outside its range, naming it as label(name) (e.g. its flag)."""
    for name, valid in ranges.items():
        if name in values and not valid.admits(values[name]):
            raise ValueError(f"{label(name)} must be {valid.describe()}; got {values[name]!r}")
