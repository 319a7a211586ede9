"""Curves of the fresh-encoder fits in this folder (fresh_*.json, smoother_*.json): held-out ELBO per step against
fitting steps, with the run's own encoder as a line. python docs/agent/fresh_encoder_schedule/plot.py"""
import json
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
own = None
for path in sorted(HERE.glob("fresh_*.json")):
    r = json.loads(path.read_text())
    steps, _, held = zip(*r["curve_valid_heldout"])
    label = (f"{'own encoder' if r['init'] == 'own' else 'new'}, lr {r['lr']:g} {r.get('schedule', 'constant').replace('none', 'constant')}, seed {r['seed']}")
    axes[0].plot(steps, held, marker=".", label=label)
    own = r["own_heldout"]
for path in sorted(HERE.glob("smoother_*.json")):
    r = json.loads(path.read_text())
    for part, style in (("filter", "-"), ("smoother", "--")):
        steps, _, held = zip(*r[part]["curve"])
        offset = r["fsteps"] if part == "smoother" else 0
        axes[1].plot([s + offset for s in steps], held, style, marker=".",
                     label=f"{r['name']}: {part} (cosine from {1e-2 if part == 'filter' else r['slr']:g})")
        axes[1].axhline(r["own_heldout"], color="grey", lw=0.8)
for ax, title in zip(axes, ("filter fits (cartpole amortized s1's frozen model)", "filter, then smoother fine-tuned")):
    if own is not None and ax is axes[0]:
        ax.axhline(own, color="black", lw=1, label="the run's own encoder")
    ax.set_ylim(0, 14)
    ax.set_xlabel("fitting steps")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
axes[0].set_ylabel("held-out ELBO (nats per step, 16 windows x 256 samples)")
fig.tight_layout()
fig.savefig(HERE / "fits.png", dpi=100)
