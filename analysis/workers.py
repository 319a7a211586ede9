"""The independent pieces of one analysis (q* fits, encoder fits, log p(x) estimators, the BDMC sandwich), run in
up to `workers` processes.

Each piece seeds torch's generator from its name and the analysis seed, so its result does not depend on what ran
before it, where, or how many workers there are: the same settings give the same numbers with 1 worker (every piece
at once in this process, the caller's own random stream left as it was) or with several. Worker processes are
forked from the caller (nothing is loaded twice); a piece's function and arguments are pickled to its worker and
its result back, so both must be picklable (module-level functions, modules, tensors, dataclasses).
"""
from __future__ import annotations

import multiprocessing
import resource
import time
import zlib
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable

import torch


def piece_seed(seed: int, name: str) -> int:
    """The seed of the piece `name` in an analysis with seed `seed` (crc32: the same in every process and run)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2 ** 63


def cpu_seconds() -> float:
    """CPU seconds so far of this process and of its ended child processes (a Workers' after it closed): the core
    time of an analysis, which its wall-clock undercounts when it has several workers."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _run_seeded(seed: int, fn: Callable, args: tuple, kwargs: dict) -> Any:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn(*args, **kwargs)


class Workers:
    """`with Workers(n, seed) as w: f = w.submit("q*[filter]", fn, *args)` runs fn(*args) seeded by its name, in
    one of n forked worker processes (n > 1) or at once in this one (n = 1); f.result() is its value (or raises its
    error; with n = 1, submit raises it). seed None (n = 1 only): the pieces are not reseeded but draw from the
    caller's stream, in order."""

    def __init__(self, workers: int = 1, seed: int | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if seed is None and workers > 1:
            raise ValueError("pieces in several workers need a seed: each is seeded from its name")
        self.seed = seed
        self.pool = None if workers == 1 else ProcessPoolExecutor(workers, multiprocessing.get_context("fork"))

    def submit(self, name: str, fn: Callable, *args, **kwargs) -> Future:
        if self.pool is not None:
            return self.pool.submit(_run_seeded, piece_seed(self.seed, name), fn, args, kwargs)
        done = Future()
        done.set_result(fn(*args, **kwargs) if self.seed is None else
                        _run_seeded(piece_seed(self.seed, name), fn, args, kwargs))
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
