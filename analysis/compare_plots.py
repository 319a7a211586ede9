"""The comparison's figures (analysis/compare.py): learning curves, calibration by horizon, final returns as
rliable-style interval plots, and final return against a correlate across runs."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agent.report import save_png  # noqa: E402
from analysis.compare_markdown import with_ci  # noqa: E402
from analysis.compare_numbers import HORIZON_BAND_SEEDS, LEVEL, SMOOTH, TRAINING_ELBOS, by_horizon  # noqa: E402
from analysis.run_results import TARGETS, Run  # noqa: E402


def inference_colors(inferences: list[str]) -> dict:
    """One tab10 colour per inference type, in the given order."""
    return {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(inferences)}


def _symlog_if_wide(ax, wide: float = 100, linthresh: float = 10) -> bool:
    """Symlog y (linear within +-linthresh) where the axis' autoscaled range (the plotted values and matplotlib's
    margins) reaches beyond +-wide, else linear axes stay (on a symlog axis values within +-linthresh get no readable
    ticks); True if it switched."""
    if np.nanmax(np.abs(ax.get_ylim())) <= wide:
        return False
    ax.set_yscale("symlog", linthresh=linthresh)
    return True


def plot_curves(variant: str, groups: list[dict], metric: str, colors: dict, path: Path) -> None:
    """The metric and the train return against env steps, the metric against wall-clock minutes, and the training
    ELBO against env steps (solid at the model's posterior, dashed at the encoder's output where it differs)."""
    fig, axes = plt.subplots(4, 1, figsize=(7, 11.5))
    panels = [(metric, "env_steps", f"{metric}: mean over seeds, {LEVEL:.0%} bootstrap CI"),
              ("train_return", "env_steps", f"train_return (with exploration noise), trailing mean over {SMOOTH} "
                                            f"episodes"),
              (metric, "minutes", f"{metric} against wall-clock (training, collection and evaluation; mean over "
                                  f"seeds)")]
    for ax, (key, x, title) in zip(axes, panels):
        for g in groups:
            c = g["curves"][key]
            color = colors[g["inference"]]
            ax.plot(c[x], c["mean"], "o-" if key == metric else "-", ms=3, color=color,
                    label=f"{g['inference']} (n={g['n_seeds']})")
            if g["n_seeds"] > 1 and c["episode"]:
                ax.fill_between(c[x], *np.transpose(c["ci"]), color=color, alpha=0.2, lw=0)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("episode return")
        ax.set_xlabel("minutes" if x == "minutes" else "environment steps")
    ax = axes[3]
    for g in groups:
        for key, style in zip(TRAINING_ELBOS, ("-", "--")):
            if key in g["curves"]:
                c = g["curves"][key]
                ax.plot(c["env_steps"], c["mean"], style, color=colors[g["inference"]], lw=1)
                if key == "elbo" and g["n_seeds"] > 1 and c["episode"]:
                    ax.fill_between(c["env_steps"], *np.transpose(c["ci"]), color=colors[g["inference"]], alpha=0.2,
                                    lw=0)
    ax.set_title("training ELBO per step (mean over seeds): solid at the posterior the model learns at,\ndashed "
                 "at the encoder's output (semi_amortized, iterative_amortized)", fontsize=9)
    ax.set_ylabel("nats / step (symlog)" if _symlog_if_wide(ax) else "nats / step")
    ax.set_xlabel("environment steps")
    axes[0].legend(fontsize=8)
    fig.suptitle(variant)
    fig.tight_layout()
    save_png(fig, path)


def plot_horizons(variant: str, groups: dict[str, list[Run]], colors: dict, path: Path) -> bool:
    """Per target (a row), the open-loop NLL, CRPS and coverage of the central 50% (dashed) and 90% (solid)
    intervals against the horizon: one line per inference type, mean over seeds, its t interval shaded from
    HORIZON_BAND_SEEDS seeds (with 2, t_{0.975, 1} = 12.7 stretches the band over the whole panel). False, and
    nothing written, where no run has scores per horizon."""
    horizons = {(inference, t): h for inference, runs in groups.items() for t in TARGETS
                if (h := by_horizon([r.analysis["uncertainty"] for r in runs], t)) is not None}
    if not horizons:
        return False
    targets = [t for t in TARGETS if any(target == t for _, target in horizons)]
    fig, axes = plt.subplots(len(targets), 3, figsize=(11, 2.8 * len(targets)), squeeze=False)
    for row, target in zip(axes, targets):
        for inference, runs in groups.items():
            if (h := horizons.get((inference, target))) is None:
                continue
            for ax, score, style in ((row[0], "nll", "-"), (row[1], "crps", "-"), (row[2], "coverage90", "-"),
                                     (row[2], "coverage50", "--")):
                ks = np.arange(1, len(h[score]["mean"]) + 1)
                mean = np.array([np.nan if m is None else m for m in h[score]["mean"]])
                ax.plot(ks, mean, style, color=colors[inference], lw=1.2,
                        label=f"{inference} (n={len(runs)})" if score == "nll" else None)
                ci = np.array([(np.nan, np.nan) if c is None or n < HORIZON_BAND_SEEDS else c
                               for c, n in zip(h[score]["ci"], h[score]["n"])])
                if not np.isnan(ci).all():
                    ax.fill_between(ks, ci[:, 0], ci[:, 1], color=colors[inference], alpha=0.15, lw=0)
        nll = "NLL (nats, symlog)" if _symlog_if_wide(row[0]) else "NLL (nats)"
        for ax, name in zip(row, (nll, "CRPS", "observed coverage (90% solid, 50% dashed)")):
            ax.set_title(f"{target}: {name}", fontsize=9)
            ax.set_xlabel("horizon k (steps)")
            ax.grid(alpha=0.3)
        for level in (0.5, 0.9):
            row[2].axhline(level, color="k", lw=0.6, ls=":")
        row[2].set_ylim(0, 1.02)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{variant}: open-loop predictions by horizon, mean over seeds ({LEVEL:.0%} t interval shaded "
                 f"where a group has {HORIZON_BAND_SEEDS} or more)")
    fig.tight_layout()
    save_png(fig, path)
    return True


def plot_final(panels: dict[str, list[dict]], inferences: list[str], colors: dict, xlabel: str, path: Path) -> None:
    """rliable-style interval plot: per panel (task variant) one row per inference type, a bar over the CI and a
    black tick at the IQM."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1.5, 0.5 * len(inferences) + 1.4),
                             sharey=True, squeeze=False)
    for ax, (title, entries) in zip(axes[0], panels.items()):
        for e in entries:
            y = inferences.index(e["inference"])
            if e["iqm_ci"] is not None:
                low, high = e["iqm_ci"]
                ax.barh(y, high - low, left=low, height=0.6, color=colors[e["inference"]], alpha=0.75)
            ax.vlines(e["iqm"], y - 0.3, y + 0.3, color="k", lw=2)
        ax.use_sticky_edges = False
        ax.margins(x=0.1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(inferences)), inferences)
    axes[0][0].set_ylim(-0.6, len(inferences) - 0.4)
    fig.tight_layout()
    save_png(fig, path)


def plot_correlation(entry: dict, metric: str, colors: dict, path: Path) -> None:
    """Final return against one correlate, one point per run, coloured by inference type, marked by task variant."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    markers = {v: m for v, m in zip(sorted({p["task_variant"] for p in entry["points"]}), "osD^v<>")}
    for p in entry["points"]:
        ax.scatter(p["x"], p["final_return"], color=colors[p["inference"]], marker=markers[p["task_variant"]], s=28,
                   alpha=0.85)
    for name in sorted({p["inference"] for p in entry["points"]}):
        ax.scatter([], [], color=colors[name], label=name)
    if len(markers) > 1:
        for v, m in markers.items():
            ax.scatter([], [], color="gray", marker=m, label=v)
    rho = [f"{v['task_variant']}: Spearman {with_ci(v['spearman'], v['ci'])} ({v['runs']} runs)"
           for v in entry["by_variant"] if v["spearman"] is not None]
    ax.set_title("\n".join([f"{len(entry['points'])} runs", *rho]), fontsize=8)
    ax.set_xlabel(entry["title"], fontsize=8)
    ax.set_ylabel(f"final {metric}")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))   # outside: points are never hidden
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)
