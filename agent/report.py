"""The run's learning-curve PNG, redrawn from metrics.jsonl after every episode."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .checkpoint import write_atomic  # noqa: E402


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def plot_learning_curve(run_dir: Path, cfg) -> None:
    """Train (with exploration noise) and evaluation returns against env steps; the random-action seed episodes
    shaded; titled with the run's env, inference and seed."""
    rows = read_metrics(run_dir)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot([r["env_steps"] for r in rows], [r["train_return"] for r in rows], ".-", alpha=0.5, label="train (with noise)")
    ev = [r for r in rows if "eval_return" in r]
    ax.plot([r["env_steps"] for r in ev], [r["eval_return"] for r in ev], "o-", label="evaluation (no noise)")
    seed = [r["env_steps"] for r in rows if r["episode"] <= cfg.seed_episodes]
    if seed:
        ax.axvspan(0, seed[-1], color="0.85", zorder=0, label=f"{cfg.seed_episodes} random seed episodes")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"{cfg.env} ({cfg.obs}), {cfg.inference}, seed {cfg.seed}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(Path(run_dir) / "learning_curve.png", lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
