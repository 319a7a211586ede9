"""Atomic writes (temp file + fsync + rename), checkpoints, and what resuming a run from one may and may not do."""
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
    except Exception as e:  # a truncated or foreign file; torch's own message is hundreds of characters
        raise ValueError(f"{path} is corrupt (truncated?) and cannot be loaded ({type(e).__name__})") from None


def is_temp_file(name: str) -> bool:
    """A temp file of write_atomic (".<name>-XXXX.tmp"), left behind only by a kill during the write."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_temp_files(run_dir: Path) -> None:
    """Remove what writes killed half-way left in run_dir (its complete files are never temp files)."""
    for path in Path(run_dir).iterdir():
        if path.is_file() and is_temp_file(path.name):
            path.unlink()


def episode_files(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / "episodes").glob("episode_*.npz"))


def metrics_lines(run_dir: Path) -> list[str]:
    metrics = Path(run_dir) / "metrics.jsonl"
    return metrics.read_text().splitlines() if metrics.exists() else []


KEEP_THE_RUN = ("nothing was changed. Put back the run's last checkpoint.pt, or leave this run as it is and start "
                "a new one with another --run-dir")


def check_resumable(run_dir: Path, checkpoint_episode: int | None) -> None:
    """Raise ValueError, changing nothing, where resuming from the checkpoint (None: there is none) would drop
    finished episodes. Episode k is written in the order episode file, metrics line, checkpoint, so a kill leaves
    at most one episode file and one metrics line past the checkpoint; anything more, or any episode without a
    checkpoint (a run checkpoints before its first episode), is a checkpoint lost or replaced by an older one."""
    files, lines = len(episode_files(run_dir)), len(metrics_lines(run_dir))
    have = f"{files} episode files and {lines} metrics lines"
    if checkpoint_episode is None and (files or lines):
        raise ValueError(f"{run_dir} holds {have} but no checkpoint.pt, so its model cannot be restored; "
                         f"{KEEP_THE_RUN}")
    if checkpoint_episode is not None and max(files, lines) > checkpoint_episode + 1:
        raise ValueError(f"{run_dir} holds {have} but its checkpoint.pt is from episode {checkpoint_episode}: "
                         f"resuming would delete finished episodes; {KEEP_THE_RUN}")


def trim_to_checkpoint(run_dir: Path, episodes: int) -> None:
    """Forget what a crash left after the last checkpoint: episode files past `episodes` and
    metrics lines past `episodes`, so every finished episode is counted exactly once."""
    for path in episode_files(run_dir)[episodes:]:
        path.unlink()
    lines = metrics_lines(run_dir)
    if len(lines) > episodes:
        kept = "".join(line + "\n" for line in lines[:episodes])
        write_atomic(Path(run_dir) / "metrics.jsonl", lambda f: f.write(kept.encode()))
