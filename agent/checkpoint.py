"""Atomic checkpoints (temp file + fsync + rename), and trimming a run back to its last checkpoint."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
