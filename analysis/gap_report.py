"""Tables (markdown) and PNGs of gap decompositions, shared by the toy experiment and the
world-model gap command. Input: {name: {split: result of analysis.decompose.decompose}}."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agent.report import save_png  # noqa: E402
from analysis.markdown import table  # noqa: E402

GAP_ORDER = ("inference", "approximation", "amortization", "conditioning")


def pm(s: dict, per_step: bool = True) -> str:
    """'mean ± s.e.' of a summary (analysis.gaps.summarize), per time step by default."""
    if per_step:
        return f"{s['mean_per_step']:.3f} ± {s['sem_per_step']:.3f}"
    return f"{s['mean']:.2f} ± {s['sem']:.2f}"


def gap_table(by_name: dict, split: str) -> list[str]:
    # the fresh encoders' columns: filter and smoother, and the Markov-Gaussian encoder where one was fitted
    fresh = [k for k in ("filter", "smoother", "markov")
             if k in ("filter", "smoother") or any(f"amortization[{k}]" in v[split]["gaps"] for v in by_name.values())]
    lines = [f"## Gap decomposition on {split} sequences (nats per time step, mean ± s.e.)", "",
             "The inference and amortization columns use the posterior named in the second column; each amortization "
             "gap is against the q* of that posterior's own family (optimized per sequence from its output: free per-step "
             "offsets of its mean and log std, or the means and log stds themselves where the family is mean-field); "
             "the approximation gap against the tightest q* found (named). The refinement table below "
             "starts at K = 0, the encoder alone, so its K = 0 equals these only where that posterior is the encoder "
             "alone.", ""]
    rows = []
    for name, gaps in by_name.items():
        g = gaps[split]["gaps"]
        rows.append([name, gaps[split].get("own_posterior", "–"), *(pm(g[k]) if k in g else "–" for k in GAP_ORDER),
                     gaps[split].get("tightest_q_star", "–"),
                     *(pm(g[f"amortization[{k}]"]) if f"amortization[{k}]" in g else "–" for k in fresh),
                     gaps[split]["log_px_estimator"]["estimator"]])
    lines += table(["method", "its posterior", *GAP_ORDER, "tightest q*", *(f"amortization ({k})" for k in fresh),
                    "log p(x) estimator"], rows)
    failures = [f"- **{name}**: {f}" for name, gaps in by_name.items() for f in gaps[split].get("failures", [])]
    warnings = [f"- **{name}**: {w}" for name, gaps in by_name.items() for w in gaps[split].get("warnings", [])]
    return (lines + (["**FAILED CHECKS** (not results):", "", *failures, ""] if failures else [])
            + (["Warnings:", "", *warnings, ""] if warnings else []) + q_star_table(by_name, split))


def q_star_table(by_name: dict, split: str) -> list[str]:
    """Each q* run: its family, start, steps, why it stopped, sequences that kept their start, and its ELBO."""
    rows = [(name, label, q, gaps[split]["elbo"][f"q*[{label}]"]) for name, gaps in by_name.items()
            for label, q in gaps[split].get("q_star", {}).items()]
    if not rows:
        return []
    return [f"q* runs on {split} sequences: each optimized per sequence (Adam, best window kept, never below its "
            "start).", ""] + table(
        ["method", "q*", "family", "started from", "steps", "stopped by", "last improvement", "kept start",
         "L[q*] per step", "wall-clock"],
        [[name, label, q["family"], q["start"], q["steps"], q["stopped_by"], q["last_improvement_step"],
          q["kept_start"], pm(elbo), f"{q['seconds']:.0f} s"] for name, label, q, elbo in rows])


def encoder_fit_table(fits: list[tuple[str, str, dict]]) -> list[str]:
    """Which iterate of each fresh encoder's fit is used (analysis.decompose.EncoderCheckpoints), one row per
    (model, seed, {encoder: record}): 'last', or the step of the best checkpoint and its gain over the last."""
    fits = [(name, seed, f) for name, seed, f in fits if f]
    if not fits:
        return []
    encoders = list(dict.fromkeys(e for _, _, f in fits for e in f))
    cell = lambda r: ("last" if r["kept"] == "last" else
                      f"step {r['best_step']} (+{r['best_elbo_per_step'] - r['last_elbo_per_step']:.3f})") + (
                      f"; {r['skipped_steps']} steps skipped" if r.get("skipped_steps") else "")
    return ["Fresh encoders: the iterate used, the last or, where the last is below the best validation checkpoint by "
            "more than 3 paired standard errors, that checkpoint (its gain over the last, nats per step; validation: "
            f"{next(iter(fits[0][2].values()))['validation']}); and the steps skipped for a non-finite gradient, "
            "if any.", "",
            *table(["model", "seed", *encoders], [[name, seed, *(cell(f[e]) if e in f else "–" for e in encoders)]
                                                  for name, seed, f in fits])]


def log_px_lines(by_name: dict, split: str) -> list[str]:
    """log p(x) per step of each decomposition {name: result of one split}, with every estimate and its wall-clock."""
    lines = []
    for name, res in by_name.items():
        rec, T = res["log_px_estimator"], res["log_px"]["length"]
        estimates = ", ".join(f"{k[5:]} {v / T:.3f} ({rec['seconds'][k[5:]]:.0f} s)" for k, v in rec.items()
                              if k.startswith("mean_") and k[5:] in rec.get("seconds", {}))
        lines.append(f"- {name}, log p(x) per step ({split}): {pm(res['log_px'])} by {rec['estimator']}"
                     + (f"; estimates (wall-clock): {estimates}" if estimates else ""))
    return lines + [""]


def bdmc_lines(b: dict | None) -> list[str]:
    """The BDMC sandwich of one decomposition (analysis.gaps.bdmc_sandwich), or nothing."""
    if not b:
        return []
    a = b["settings"]
    return [f"## How far log p(x) can be trusted: BDMC sandwich on {b['sequences']} sequences simulated from the model",
            "", f"Forward AIS (lower bound) {pm(b['lower'])}, reverse AIS from the generating latents (upper bound) "
            f"{pm(b['upper'])}; width {pm(b['width'])} nats per step (AIS with {a['steps']} distributions x "
            f"{a['chains']} chains, {a['leapfrog']} leapfrog steps; acceptance {b['acceptance']['forward']:.2f} / "
            f"{b['acceptance']['reverse']:.2f}; from the q* in the fresh smoother's family ({b['q_star_family']}), ELBO "
            f"{pm(b['elbo_q_star'])}; {b['seconds']:.0f} s). "
            "A log p(x) estimate with these settings on this model is uncertain by about the width.", ""]


def curve_table(by_name: dict, split: str) -> list[str]:
    curves = {n: g[split]["refinement_curve"] for n, g in by_name.items() if "refinement_curve" in g.get(split, {})}
    if not curves:
        return []
    ks = [c["K"] for c in next(iter(curves.values()))]
    rows = []
    for name, c in curves.items():
        res = by_name[name][split]
        r = res.get("refinement_settings")
        start = res.get("refinement_init", "–") + (f" (K = 0), then {r['optimizer']} lr {r['lr']:g}, "
                                                     f"{r['n_samples']} samples per step" if r else "")
        rows.append([name, start, *(f"{x['gap']['mean_per_step']:.3f} ({x['seconds']:.2f}s)" for x in c)])
    return [f"## Amortization gap after K refinement steps ({split} sequences, nats per time step)", ""] + table(
        ["method", "refined from", *(f"K={k}" for k in ks)], rows) + [f"In parentheses: wall-clock of the amortized pass plus K refinement steps for all {split} "
                        "sequences, read off one refinement run at each K. Refinement moves per-step offsets of the "
                        "amortized posterior's mean and log std (K = 0 is the encoder itself)."]


def plot_gap_bars(by_name: dict, splits: tuple, path: Path, title: str) -> None:
    names = list(by_name)
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.6), sharey=True, squeeze=False)
    width = 0.8 / len(GAP_ORDER)
    for ax, split in zip(axes[0], splits):
        for j, gap in enumerate(GAP_ORDER):
            xs = [i + j * width for i in range(len(names))]
            g = [by_name[n][split]["gaps"].get(gap) for n in names]
            ax.bar(xs, [x["mean_per_step"] if x else 0 for x in g], width,
                   yerr=[x["sem_per_step"] if x else 0 for x in g], label=gap, capsize=2)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=20)
        ax.set_title(f"{split} sequences")
        ax.axhline(0, color="k", lw=0.5)
    axes[0][0].set_ylabel("gap (nats per time step)")
    axes[0][-1].legend()
    fig.suptitle(title)
    save(fig, path)


def plot_refinement(by_name: dict, split: str, path: Path, title: str) -> None:
    """The amortization gap L[q*] - L[q_K] against K and against wall-clock."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, gaps in by_name.items():
        c = gaps[split].get("refinement_curve")
        if not c:
            continue
        g = [x["gap"]["mean_per_step"] for x in c]
        e = [x["gap"]["sem_per_step"] for x in c]
        axes[0].errorbar([max(x["K"], 0.5) for x in c], g, yerr=e, marker="o", label=name, capsize=2)
        axes[1].errorbar([x["seconds"] for x in c], g, yerr=e, marker="o", label=name, capsize=2)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("refinement steps K (K=0 drawn at 0.5)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel(f"wall-clock for the {split} set (s)")
    for ax in axes:
        ax.set_ylabel("L[q*] - L[q_K] (nats per step)")
        ax.axhline(0, color="k", lw=0.5)
    axes[0].legend()
    fig.suptitle(title)
    save(fig, path)


def save(fig, path: Path) -> None:
    """Lay the figure out tightly and write it (agent.report.save_png, at 110 dpi)."""
    fig.tight_layout()
    save_png(fig, path, dpi=110)
