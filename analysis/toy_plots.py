"""Tables (markdown) and PNG plots of a toy experiment's results.json."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _pm(s: dict, per_step: bool = True) -> str:
    if per_step:
        return f"{s['mean_per_step']:.3f} ± {s['sem_per_step']:.3f}"
    return f"{s['mean']:.2f} ± {s['sem']:.2f}"


GAP_ORDER = ("inference", "approximation", "amortization", "conditioning")


def markdown(r: dict) -> str:
    t = r["true_model"]
    lines = [f"# Toy experiment: {r['task']}", "",
             f"Settings: `{ {k: v for k, v in r['settings'].items()} }`", "", f"Machine: {r['machine']}", "",
             "## Held-out log-likelihood and learned noise (nats per time step, mean ± s.e. over test sequences)", "",
             "| method | test log p(x) / T | estimator | transition var | emission var | train ms/step |",
             "|---|---|---|---|---|---|",
             f"| true model | {_pm(t['test_log_lik'])} | {t['estimator']} | {_noise(t['noise'], 'transition')} | "
             f"{t['noise'].get('emission_var', float('nan')):.3g} | |"]
    for name, m in r["methods"].items():
        if "evaluation_error" in m:
            lines.append(f"| {name} | evaluation failed: {m['evaluation_error'][:80]} | | {_noise(m['noise'], 'transition')} | "
                         f"{m['noise'].get('emission_var', float('nan')):.3g} | {m['ms_per_step']:.0f} |")
            continue
        lines.append(f"| {name} | {_pm(m['test_log_lik'])} | {m['test_log_lik_estimator']['estimator']} | "
                     f"{_noise(m['noise'], 'transition')} | {m['noise'].get('emission_var', float('nan')):.3g} | "
                     f"{m['ms_per_step']:.0f} |")
    lines += ["", "Transition variance is given in observation units (C Q C^T) for linear models, where Q alone "
              "is not identifiable.", ""]
    for split in ("train", "test"):
        lines += [f"## Gap decomposition on {split} sequences (nats per time step, mean ± s.e.)", "",
                  "| method | " + " | ".join(GAP_ORDER) + " | amortization (filter) | amortization (smoother) | log p(x) estimator |",
                  "|---" * (len(GAP_ORDER) + 4) + "|"]
        for name, m in r["methods"].items():
            if "gaps" not in m:
                continue
            g = m["gaps"][split]["gaps"]
            cells = [_pm(g[k]) if k in g else "–" for k in GAP_ORDER]
            cells += [_pm(g["amortization[filter]"]), _pm(g["amortization[smoother]"])]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['gaps'][split]['log_px_estimator']['estimator']} |")
        lines.append("")
    lines += ["## Amortization gap after K refinement steps (test sequences, nats per time step)", "",
              "| method | " + " | ".join(f"K={c['K']}" for c in _any_curve(r)) + " |",
              "|---" * (len(_any_curve(r)) + 1) + "|"]
    for name, m in r["methods"].items():
        if "gaps" in m:
            c = m["gaps"]["test"]["refinement_curve"]
            lines.append(f"| {name} | " + " | ".join(f"{x['gap']['mean_per_step']:.3f} ({x['seconds']:.2f}s)" for x in c) + " |")
    lines += ["", "In parentheses: wall-clock of the amortized pass plus K refinement steps for all test sequences."]
    return "\n".join(lines) + "\n"


def _noise(n: dict, kind: str) -> str:
    v = n.get(f"{kind}_var_in_obs_units", n.get(f"{kind}_var"))
    return "–" if v is None else f"{v:.3g}"


def _any_curve(r):
    for m in r["methods"].values():
        if "gaps" in m:
            return m["gaps"]["test"]["refinement_curve"]
    return []


def plot_all(r: dict, out: Path) -> None:
    methods = {k: m for k, m in r["methods"].items() if "test_log_lik" in m}
    if not methods:
        return
    names = list(methods)
    # held-out log-likelihood
    fig, ax = plt.subplots(figsize=(6, 3.5))
    vals = [methods[n]["test_log_lik"]["mean_per_step"] for n in names]
    errs = [methods[n]["test_log_lik"]["sem_per_step"] for n in names]
    ax.bar(names, vals, yerr=errs, color="tab:blue", capsize=3)
    ax.axhline(r["true_model"]["test_log_lik"]["mean_per_step"], color="k", ls="--", label="true model")
    lo = min(vals + [r["true_model"]["test_log_lik"]["mean_per_step"]])
    ax.set_ylim(lo - 0.1 * abs(lo) - 0.05, None)
    ax.set_ylabel("held-out log p(x) / T (nats)")
    ax.set_title(f"{r['task']}: held-out log-likelihood")
    ax.legend()
    _save(fig, out / "loglik.png")
    # learned noise
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, kind in zip(axes, ("transition", "emission")):
        v = [float(_noise(methods[n]["noise"], kind)) if _noise(methods[n]["noise"], kind) != "–" else 0 for n in names]
        ax.bar(names, v, color="tab:orange")
        tv = _noise(r["true_model"]["noise"], kind)
        if tv != "–":
            ax.axhline(float(tv), color="k", ls="--", label="true")
        ax.set_title(f"{kind} noise variance")
        ax.tick_params(axis="x", rotation=30)
        ax.legend()
    _save(fig, out / "noise.png")
    gap_methods = [n for n in names if "gaps" in methods[n]]
    if not gap_methods:
        return
    # gap decomposition
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, split in zip(axes, ("train", "test")):
        width = 0.8 / len(GAP_ORDER)
        for j, gap in enumerate(GAP_ORDER):
            xs = [i + j * width for i in range(len(gap_methods))]
            g = [methods[n]["gaps"][split]["gaps"].get(gap) for n in gap_methods]
            ax.bar(xs, [x["mean_per_step"] if x else 0 for x in g], width,
                   yerr=[x["sem_per_step"] if x else 0 for x in g], label=gap, capsize=2)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(gap_methods))], gap_methods, rotation=20)
        ax.set_title(f"{split} sequences")
        ax.axhline(0, color="k", lw=0.5)
    axes[0].set_ylabel("gap (nats per time step)")
    axes[1].legend()
    fig.suptitle(f"{r['task']}: gap decomposition")
    _save(fig, out / "gaps.png")
    # amortization gap vs K and wall-clock
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for n in gap_methods:
        c = methods[n]["gaps"]["test"]["refinement_curve"]
        g = [x["gap"]["mean_per_step"] for x in c]
        e = [x["gap"]["sem_per_step"] for x in c]
        axes[0].errorbar([max(x["K"], 0.5) for x in c], g, yerr=e, marker="o", label=n, capsize=2)
        axes[1].plot([x["seconds"] for x in c], g, marker="o", label=n)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("refinement steps K (K=0 drawn at 0.5)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("wall-clock for the test set (s)")
    for ax in axes:
        ax.set_ylabel("L[q*] - L[q_K] (nats per step)")
        ax.axhline(0, color="k", lw=0.5)
    axes[0].legend()
    fig.suptitle(f"{r['task']}: amortization gap vs refinement")
    _save(fig, out / "refinement.png")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
