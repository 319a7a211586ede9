"""Atomic checkpoints (temp file + fsync + rename), and trimming a run back to its last checkpoint."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def write_atomic(path, write, prefix: str | None = None, suffix: str = ".tmp") -> str:
    """Write a file so that it is either absent/old or complete: `write(f)` fills a temp file in the
    same directory, which is fsynced and renamed over `path`; on failure the temp file is removed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix or f".{os.path.basename(path)}-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_atomic(obj, path: Path) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"corrupt checkpoint {path}: {e}") from None


def trim_to_checkpoint(run_dir: Path, episodes: int) -> None:
    """Forget what a crash left after the last checkpoint: episode files past `episodes` and
    metrics lines past `episodes`, so every finished episode is counted exactly once."""
    for path in sorted((run_dir / "episodes").glob("episode_*.npz"))[episodes:]:
        path.unlink()
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        lines = metrics.read_text().splitlines()[:episodes]
        tmp = metrics.with_name("metrics.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, metrics)
