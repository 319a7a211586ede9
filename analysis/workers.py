"""The independent pieces of one analysis (q* fits, encoder fits, log p(x) estimators, the BDMC sandwich), run in
up to `workers` processes.

Each piece seeds torch's generator from its name and the analysis seed, so its result does not depend on what ran
before it, where, or how many workers there are: the same settings give the same numbers with 1 worker (every piece
at once in this process, the caller's own random stream left as it was) or with several. Worker processes are
forked from the caller (nothing is loaded twice); a piece's function and arguments are pickled to its worker and
its result back, so both must be picklable (module-level functions, modules, tensors, dataclasses).

Given a PieceStore, each finished piece is also saved to disk, and a piece already there is loaded instead of run:
an analysis killed part way (a sitting that ends) resumes from the pieces it finished. Since a piece's result
depends only on its name, the seed and its arguments, the resumed analysis gives the numbers, bit for bit, of one
that ran through (tests/test_workers.py, tests/test_world_model_analysis.py); the store's key (the analysis'
inputs, e.g. its settings and the checkpoint's hash) says when the stored pieces no longer apply.
"""
from __future__ import annotations

import json
import multiprocessing
import re
import resource
import shutil
import time
import zlib
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch

from agent.checkpoint import load, save_atomic, write_atomic


def piece_seed(seed: int, name: str) -> int:
    """The seed of the piece `name` in an analysis with seed `seed` (crc32: the same in every process and run)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2 ** 63


def cpu_seconds() -> float:
    """CPU seconds so far of this process and of its ended child processes (a Workers' after it closed): the core
    time of an analysis, which its wall-clock undercounts when it has several workers."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class PieceStore:
    """The finished pieces of one analysis in `folder`: per piece NAME.pt (its result) and NAME.json (its wall-clock
    and CPU seconds). `key` (JSON-serializable) names the inputs the pieces were computed from; a folder holding
    another key's pieces is emptied first."""

    KEY = "key.json"

    def __init__(self, folder: Path, key: dict):
        self.folder, key = Path(folder), json.loads(json.dumps(key))      # as it reads back from disk
        if (self.folder / self.KEY).is_file() and json.loads((self.folder / self.KEY).read_text()) != key:
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(self.folder / self.KEY, key)

    def path(self, name: str) -> str:
        """The piece's files without their suffix: the name made safe, and its crc32 to keep names apart."""
        return str(self.folder / f"{re.sub(r'[^A-Za-z0-9-]+', '_', name).strip('_')}-{zlib.crc32(name.encode()):08x}")

    def load(self, name: str) -> tuple[Any, dict] | None:
        """(result, {"seconds", "core_seconds"}) of a stored piece, or None where it is not stored. The cost is
        written after the result, so a piece with both files is complete."""
        base = self.path(name)
        if not Path(base + ".json").is_file():
            return None
        return load(Path(base + ".pt")), json.loads(Path(base + ".json").read_text())

    @staticmethod
    def stored_core_seconds(folder: Path) -> float:
        """CPU seconds of the pieces stored in `folder` (0 where there is none): what a resumed analysis is spared."""
        return sum(json.loads(p.read_text())["core_seconds"] for p in Path(folder).glob("*.json")
                   if p.name != PieceStore.KEY)


def _write_json(path: Path, value) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(value, indent=1).encode()))


def _run_seeded(seed: int, fn: Callable, args: tuple, kwargs: dict, store_base: str | None = None) -> Any:
    """fn(*args, **kwargs) seeded by `seed`; with store_base, its result and then its cost saved there (.pt, .json)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        result = fn(*args, **kwargs)
    if store_base is not None:
        save_atomic(result, Path(store_base + ".pt"))
        _write_json(Path(store_base + ".json"), {"seconds": time.perf_counter() - t0,
                                                 "core_seconds": time.process_time() - cpu0})
    return result


class Workers:
    """`with Workers(n, seed) as w: f = w.submit("q*[filter]", fn, *args)` runs fn(*args) seeded by its name, in
    one of n forked worker processes (n > 1) or at once in this one (n = 1); f.result() is its value (or raises its
    error; with n = 1, submit raises it). seed None (n = 1 only): the pieces are not reseeded but draw from the
    caller's stream, in order. With a `store`, a piece stored there is loaded instead of run (`resumed` records its
    seconds from the call that computed it) and every piece run is stored when it finishes."""

    def __init__(self, workers: int = 1, seed: int | None = None, store: PieceStore | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if seed is None and (workers > 1 or store is not None):
            raise ValueError("pieces in several workers or in a store need a seed: each is seeded from its name")
        self.seed, self.store, self.resumed = seed, store, {}
        self.pool = None if workers == 1 else ProcessPoolExecutor(workers, multiprocessing.get_context("fork"))

    def submit(self, name: str, fn: Callable, *args, **kwargs) -> Future:
        done = Future()
        if self.store is not None and (stored := self.store.load(name)) is not None:
            done.set_result(stored[0])
            self.resumed[name] = stored[1]
            return done
        if self.seed is None:
            done.set_result(fn(*args, **kwargs))
            return done
        task = (piece_seed(self.seed, name), fn, args, kwargs, self.store and self.store.path(name))
        if self.pool is not None:
            return self.pool.submit(_run_seeded, *task)
        done.set_result(_run_seeded(*task))
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
