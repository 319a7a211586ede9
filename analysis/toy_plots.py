"""Tables (markdown) and PNG plots of a toy experiment's results.json."""
from __future__ import annotations

from pathlib import Path

from .gap_report import curve_table, encoder_fit_table, log_px_lines, gap_table, plot_gap_bars, plot_refinement, pm, save  # sets the Agg backend
from .markdown import table

import matplotlib.pyplot as plt  # noqa: E402

# a (method, seed) run that failed has one of these keys instead of its results
FAILED_RUN = {"training_error": "training diverged", "evaluation_error": "evaluation failed"}


def run_failure(run: dict) -> str | None:
    """Why a (method, seed) run has no results ('training diverged: ...' or 'evaluation failed: ...'), or None."""
    return next((f"{why}: {run[key]}" for key, why in FAILED_RUN.items() if key in run), None)


def markdown(r: dict) -> str:
    t = r["true_model"]
    lines = [f"# Toy experiment: {r['task']}", "",
             f"Settings: `{ {k: v for k, v in r['settings'].items()} }`", "", f"Machine: {r['machine']}", "",
             f"Each learned method is trained with {r['settings'].get('seeds', 1)} seeds on the same data: its numbers are "
             "means over seeds ± the standard error over seeds (the true model's: ± s.e. over sequences). Per-seed "
             "results, with standard errors over sequences, are in results.json (`methods.<name>.seeds`).", "",
             "## Held-out log-likelihood and learned noise (nats per time step)", "",
             "| method | test log p(x) / T | estimator | transition var | emission var | train ms/step |",
             "|---|---|---|---|---|---|",
             f"| true model | {pm(t['test_log_lik'])} | {t['estimator']} | {_noise(t['noise'], 'transition')} | "
             f"{t['noise'].get('emission_var', float('nan')):.3g} | |"]
    for name, m in r["methods"].items():
        if run_failure(m):                          # every seed failed
            lines.append(f"| {name} | every seed failed (listed below) | | – | – | – |")
            continue
        lines.append(f"| {name} | {pm(m['test_log_lik'])} | {m['test_log_lik_estimator']['estimator']} | "
                     f"{_noise(m['noise'], 'transition')} | {m['noise'].get('emission_var', float('nan')):.3g} | "
                     f"{m['ms_per_step']:.0f} |")
    lines += ["", "Transition variance is given in observation units (C Q C^T) for linear models, where Q alone "
              "is not identifiable.", ""]
    failed = [f"- {name} {f}" for name, m in r["methods"].items() for f in m.get("failed_seeds", [])]
    if failed:
        lines += ["Runs without results (left out of the means over seeds in every table):", "", *failed, ""]
    gap_methods = gap_rows(r)
    for split in ("train", "test"):
        lines += gap_table(gap_methods, split)
        lines += log_px_lines({n: g[split] for n, g in gap_methods.items()}, split)
    lines += curve_table(gap_methods, "test")
    lines += encoder_fit_table(_per_model(r, lambda g: g.get("test", g.get("train", {})).get("encoder_fit")))
    lines += bdmc_table(r)
    return "\n".join(lines) + "\n"


def _per_model(r: dict, read) -> list[tuple[str, str, object]]:
    """(model, seed, read(its gaps)) for the true model and every learned model (one per method and seed), where
    read gives something."""
    found = [("true model", "–", read(r["true_model"]["gaps"]))] if "gaps" in r.get("true_model", {}) else []
    found += [(name, k, read(run["gaps"])) for name, m in r["methods"].items() for k, run in m.get("seeds", {}).items()
              if "gaps" in run]
    return [(name, k, x) for name, k, x in found if x]


def bdmc_table(r: dict) -> list[str]:
    """The BDMC sandwich at the true model and at every learned model, one row per seed (each seed is its own
    model: the width says how far log p(x) can be trusted on that one)."""
    found = _per_model(r, lambda g: g.get("bdmc"))
    if not found:
        return []
    b0 = found[0][2]
    a = b0["settings"]
    return ["## How far log p(x) can be trusted: BDMC sandwich on sequences simulated from each model", "",
            f"Per model, {b0['sequences']} sequences simulated from it: forward AIS from the q* in the fresh smoother's "
            f"family (a stochastic lower bound of log p(x)) and reverse AIS from the latents that generated them (an "
            f"upper bound), nats per step ± s.e. over sequences; AIS with {a['steps']} distributions x {a['chains']} "
            f"chains, {a['leapfrog']} leapfrog steps. A log p(x) estimate with these settings on that model is uncertain "
            "by about the width.", "",
            *table(["model", "seed", "lower", "upper", "width", "acceptance (forward / reverse)", "seconds"],
                   [[name, k, pm(b["lower"]), pm(b["upper"]), pm(b["width"]),
                     f"{b['acceptance']['forward']:.2f} / {b['acceptance']['reverse']:.2f}", f"{b['seconds']:.0f}"]
                    for name, k, b in found])]


def gap_rows(r: dict) -> dict:
    """{row name: gaps}: the true model's (encoders fitted to it), then each learned model's."""
    rows = {"true model": r["true_model"]["gaps"]} if "gaps" in r.get("true_model", {}) else {}
    return {**rows, **{name: m["gaps"] for name, m in r["methods"].items() if "gaps" in m}}


def _noise(n: dict, kind: str) -> str:
    v = n.get(f"{kind}_var_in_obs_units", n.get(f"{kind}_var"))
    return "–" if v is None else f"{v:.3g}"


def plot_all(r: dict, out: Path) -> None:
    methods = {k: m for k, m in r["methods"].items() if "test_log_lik" in m}
    if not methods:
        return
    names = list(methods)
    # held-out log-likelihood, as the difference to the true model's on the same sequences: the values sit
    # near -3 and differ by hundredths, which bars from 0 hide
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    true = r["true_model"]["test_log_lik"]["mean_per_step"]
    diffs = [methods[n]["test_log_lik"]["mean_per_step"] - true for n in names]
    errs = [methods[n]["test_log_lik"]["sem_per_step"] for n in names]
    ax.errorbar(range(len(names)), diffs, yerr=errs, fmt="o", color="tab:blue", capsize=4)
    ax.axhline(0, color="k", ls="--", label=f"true model ({true:.3f} nats per step)")
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel("log p(x) / T minus the true model's")
    ax.set_title(f"{r['task']}: held-out log-likelihood (± s.e. over test sequences)")
    ax.legend(fontsize=8)
    save(fig, out / "loglik.png")
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
    save(fig, out / "noise.png")
    gap_methods = gap_rows(r)
    if gap_methods:
        plot_gap_bars(gap_methods, ("train", "test"), out / "gaps.png", f"{r['task']}: gap decomposition")
        plot_refinement(gap_methods, "test", out / "refinement.png", f"{r['task']}: amortization gap vs refinement")
