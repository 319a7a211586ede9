"""The run's learning-curve PNG, redrawn from metrics.jsonl after every episode, and save_png, the one way the
project writes a figure."""
from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from .checkpoint import write_atomic  # noqa: E402

# colours of a saved figure: enough for ten line colours over white with their anti-aliased edges and shaded
# bands; the project's line plots take about a quarter of their RGBA size (the study report's learning curves
# 213 kB -> 54 kB, its 3x3 calibration figure 369 kB -> 97 kB), which matters for the study's reports, committed
# again with every run
PALETTE = 64


def save_png(fig, path: Path, dpi: int = 100) -> None:
    """Write `fig` to `path` atomically as a PNG of PALETTE colours, and close it."""
    rendered = io.BytesIO()
    fig.savefig(rendered, format="png", dpi=dpi)
    plt.close(fig)
    image = Image.open(rendered).convert("RGB").quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT)
    write_atomic(path, lambda f: image.save(f, format="png", optimize=True))


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
    save_png(fig, Path(run_dir) / "learning_curve.png")
