"""Wall-clock of every estimator of the gap decomposition at its default settings, read from the results of the
two commands that run it (issue 15's benchmark):

    python -m analysis.world_model_gaps RUN                      # a trained cartpole agent (RSSM)
    python -m analysis.toy_experiment --task synthetic9          # toy models, learned and true
    python benchmarks/bench_gaps.py --rssm RUN/analysis/gaps.json --toy results/toy_synthetic9/results.json \
        --out docs/bench_gaps

Writes OUT/bench_gaps.md (per estimator: seconds on the held-out / test split) and OUT/refinement_wallclock.png (the
amortization gap after K refinement steps against the wall-clock of the encoder pass plus K steps, beside the
wall-clock of the q* it is measured against). The commands time each part where it runs; this script only collects.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agent.report import save_png  # noqa: E402


def rows_of(split: dict, bdmc: dict | None) -> dict[str, float]:
    """{estimator: seconds} of one decomposition of one split."""
    out = {f"fit fresh {k} encoder": v for k, v in split.get("encoder_fit_seconds", {}).items()}
    out.update({f"q*[{k}] (to its stopping rule)": q["seconds"] for k, q in split["q_star"].items()})
    out.update({f"log p(x): {k}": v for k, v in split["log_px_estimator"].get("seconds", {}).items()})
    if bdmc:
        out[f"BDMC sandwich ({bdmc['sequences']} simulated sequences, forward and reverse AIS)"] = bdmc["seconds"]
    out.update({f"refinement curve: encoder + K = {r['K']} steps": r["seconds"]
                for r in split.get("refinement_curve", [])})
    return out


def toy_decompositions(results: dict, split: str) -> list[tuple[str, dict, dict | None]]:
    """(label, split result, bdmc) of the true model and of every learned (method, seed) of a toy results.json."""
    out = [("true model", results["true_model"]["gaps"][split], results["true_model"]["gaps"].get("bdmc"))]
    for method, entry in results["methods"].items():
        for k, run in entry.get("seeds", {}).items():
            if "gaps" in run:
                out.append((f"{method} seed {k}", run["gaps"][split], run["gaps"].get("bdmc")))
    return out


def table(columns: dict[str, dict[str, float]]) -> list[str]:
    names = list(dict.fromkeys(r for col in columns.values() for r in col))
    lines = ["| estimator | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{c[name]:.1f}" if name in c else "–" for c in columns.values())
                     + " |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rssm", type=Path, required=True, help="gaps.json of analysis.world_model_gaps")
    ap.add_argument("--toy", type=Path, required=True, help="results.json of analysis.toy_experiment")
    ap.add_argument("--out", type=Path, default=Path("docs/bench_gaps"), help="output folder")
    args = ap.parse_args(argv)
    for path in (args.rssm, args.toy):
        if not path.is_file():
            raise SystemExit(f"{path} does not exist; run the command that writes it first (see --help)")
    rssm, toy = json.loads(args.rssm.read_text()), json.loads(args.toy.read_text())
    decomps = toy_decompositions(toy, "test")
    learned = [rows_of(s, b) for label, s, b in decomps[1:]]
    mean_learned = {k: sum(r[k] for r in learned if k in r) / sum(k in r for r in learned)
                    for k in dict.fromkeys(k for r in learned for k in r)}
    columns = {f"RSSM, {rssm['env']} {rssm['inference']} (held-out, {rssm['heldout']['n_sequences']} windows)":
               rows_of(rssm["heldout"], rssm.get("bdmc")),
               f"{toy['task']} true model (test, {decomps[0][1]['n_sequences']} sequences)": rows_of(decomps[0][1],
                                                                                                   decomps[0][2])}
    if learned:
        columns[f"{toy['task']} learned models (test, mean over {len(learned)} runs)"] = mean_learned
    args.out.mkdir(parents=True, exist_ok=True)
    md = ["# Wall-clock of each estimator of the gap decomposition, at the commands' defaults", "",
          f"RSSM: `python -m analysis.world_model_gaps` on {rssm['run_dir']} ({rssm['machine']}; "
          f"{rssm['seconds']:.0f} s in all). Toy: `python -m analysis.toy_experiment --task {toy['task']}` "
          f"({toy['machine']}). Seconds for one split; the fresh encoders are fitted once for both splits.", ""]
    md += table(columns)
    md += ["", "The q* families (RSSM, then the toy's true model; on the toy SSMs the filter and smoother are mean-field, "
           "so their q* is in the mean-field family, and the Markov encoder's in the Markov-Gaussian one):", ""]
    md += [f"- RSSM {k}: {q['family']}; {q['steps']} steps" for k, q in rssm["heldout"]["q_star"].items()]
    md += [f"- {toy['task']} true model {k}: {q['family']}; {q['steps']} steps"
           for k, q in decomps[0][1]["q_star"].items()]
    (args.out / "bench_gaps.md").write_text("\n".join(md) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = [(axes[0], f"RSSM {rssm['env']} ({rssm['inference']}), held-out", [("own", rssm["heldout"])]),
              (axes[1], f"{toy['task']}, test", [(label, s) for label, s, _ in decomps if "refinement_curve" in s])]
    for ax, title, series in panels:
        for label, split in series:
            curve = split.get("refinement_curve", [])
            if not curve:
                continue
            start = split.get("refinement_init", "encoder").split()[0]
            ref = split["q_star"].get("own" if start == "own" else "filter", {})
            line = ax.plot([max(r["seconds"], 1e-3) for r in curve], [r["gap"]["mean_per_step"] for r in curve],
                           marker="o", label=label)[0]
            if ref:
                ax.axvline(ref["seconds"], color=line.get_color(), linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("wall-clock of encoder + K refinement steps (s); dotted: its q* run")
        ax.set_ylabel("amortization gap (nats per step)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, args.out / "refinement_wallclock.png", dpi=120)
    print("\n".join(md))
    print(f"wrote {args.out}/bench_gaps.md and refinement_wallclock.png")


if __name__ == "__main__":
    main()
