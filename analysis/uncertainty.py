"""Direct evaluation of a trained world model's uncertainty (docs/definitions.md section 5).

    python -m analysis.uncertainty runs/cartpole-amortized-s0

On held-out episodes (collected by the trained agent; the same cache as the gap command), the
posterior belief after observing steps 0..c (S samples of s_c, as the agent's belief computes it)
is rolled forward through the model's prior with the true actions a_{c+1..c+H}. Each sample s gives
a predictive N(mu_s, sigma^2) of the observation, the reward and (where the env records it) the
ground-truth physical state through a linear read-out of [h, z] fitted by ridge regression on
training-replay windows (its residual std is the read-out's sigma). The S samples form a Gaussian
mixture, scored per horizon k = 1..H (analysis.calibration): NLL, CRPS, and coverage of the central
50% and 90% intervals; plus the calibration curve (observed vs nominal coverage). Missing
observations are left out of the observation scores. The run's injected noise (obs_noise,
action_noise, missing observations) is reported beside the model's own noise. Writes
RUN_DIR/analysis/uncertainty.json, uncertainty.md, calibration.png and horizon.png.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from agent.replay import Replay
from world_models.base import ModelState, SequenceBatch
from world_models.posteriors import make_posterior
from world_models.posteriors.registry import Q_STAR
from world_models.rollout import rollout

from .calibration import LEVELS, covered, mixture_crps, mixture_nll, pit
from .gap_report import save
from .cli import command_main, parse_with_quick, parser
from .run_loading import HELDOUT_POLICIES, heldout_replay, load_run, write_report

import matplotlib.pyplot as plt  # noqa: E402  (backend set by gap_report)

TARGETS = ("obs", "reward", "state")
BURN_IN = 10     # steps of each read-out window left out of the fit (h starts at 0 mid-episode)


QUICK = {"heldout_episodes": 2, "horizon": 20, "samples": 20, "readout_windows": 50}


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("run_dir", type=Path, help="an agent run directory (run_agent.py --run-dir)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/analysis)")
    p.add_argument("--heldout-episodes", type=int, default=4, help="held-out episodes to collect (or reuse)")
    p.add_argument("--heldout-policy", default="eval", choices=HELDOUT_POLICIES, help="how they are collected")
    p.add_argument("--horizon", type=int, default=50, help="open-loop prediction steps H")
    p.add_argument("--starts", type=int, nargs="+", default=None,
                   help="steps c after which predictions start (default: every 20 steps from 10 that leave H steps)")
    p.add_argument("--samples", type=int, default=100, help="belief / latent samples S per prediction")
    p.add_argument("--readout-windows", type=int, default=200, help="training windows for the state read-out")
    p.add_argument("--seed", type=int, default=0, help="seed of the belief and latent samples")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parse_with_quick(p, argv, QUICK, positive=("heldout_episodes", "horizon", "samples", "readout_windows",
                                                       "threads"))


# --- the model's predictions ------------------------------------------------------------------------
def posterior_rollout(agent, batch: SequenceBatch, samples: int = 1):
    """A rollout of the run's posterior over the batch, as the agent's belief computes it: its encoder where
    it has one, else q* optimized over the batch (per_sequence)."""
    model, encoder = agent.model, agent.belief.encoder
    with torch.no_grad():
        if encoder is not None:
            return rollout(model, encoder, batch, encoder.context(model, batch), samples)
        q = make_posterior(Q_STAR, model, lr=0.05, n_samples=8, max_steps=300, window=50, patience=3,
                           init="prior")
        return rollout(model, q, batch, q.context(model, batch), samples)


def belief(agent, prefix: SequenceBatch, samples: int) -> ModelState:
    """S samples of s_c per sequence (sample-major) after the prefix."""
    ro = posterior_rollout(agent, prefix, samples)
    return ModelState(ro.h[:, -1], ro.z[:, -1])


def open_loop(agent, future: SequenceBatch, start: ModelState, first_step: int):
    """Latent samples (S*B, H, .) of steps c+1..c+H from the prior, given s_c and the true actions."""
    S = start.h.shape[0] // future.batch_size
    rep = future.repeat(S)
    rep.start, rep.t0 = start, first_step
    with torch.no_grad():
        ro = rollout(agent.model, None, rep)
    return ro.h, ro.z


# --- ground-truth state read-out ---------------------------------------------------------------------
def windows_with_state(replay: Replay, n: int, length: int, seed: int):
    batch, start = replay.sample(n, length, np.random.default_rng(seed))
    eps = replay.episodes
    state = np.stack([eps[i]["physics_state"][s:s + length] for i, s in zip(batch.index.tolist(), start.tolist())])
    return batch, torch.from_numpy(state)


def fit_readout(agent, n: int, seed: int):
    """Ridge regression [h, z, 1] -> physical state on posterior samples of training windows (float64):
    W = (F^T F + lambda I)^-1 F^T Y; returns (W, residual std per state dimension)."""
    length = min(50, min(len(e["reward"]) for e in agent.replay.episodes))
    batch, state = windows_with_state(agent.replay, n, length, seed)
    ro = posterior_rollout(agent, batch)
    F = _features(ro.h, ro.z)[:, BURN_IN:].reshape(-1, ro.h.shape[-1] + ro.z.shape[-1] + 1)
    Y = state[:, BURN_IN:].reshape(len(F), -1).double()
    lam = 1e-3 * float((F ** 2).sum(0).mean())
    W = torch.linalg.solve(F.T @ F + lam * torch.eye(F.shape[1], dtype=F.dtype), F.T @ Y)
    return W, (Y - F @ W).std(0)


def _features(h, z):
    return torch.cat([h, z, torch.ones_like(h[..., :1])], -1).double()


# --- scoring -----------------------------------------------------------------------------------------
def score(mu, sigma, y, valid):
    """Per-horizon sums and counts of NLL, CRPS and PIT-based coverage over valid (B, H) targets."""
    nll = mixture_nll(mu, sigma, y)                         # (B, H)
    crps = mixture_crps(mu, sigma, y).mean(-1)              # (B, H) mean over dimensions
    u = pit(mu, sigma, y)                                   # (B, H, D)
    v = valid.double()
    per = {"nll": (nll * v).sum(0), "crps": (crps * v).sum(0), "count": v.sum(0)}
    for level in LEVELS:
        per[f"cov{level}"] = (covered(u, level).double().mean(-1) * v).sum(0)
    return per


def evaluate(agent, held: Replay, args) -> dict:
    model = agent.model
    T = min(len(e["reward"]) for e in held.episodes)
    H = min(args.horizon, T - 2)
    starts = args.starts or list(range(10, T - H, 20)) or [0]
    if max(starts) + H >= T or min(starts) < 0:
        raise ValueError(f"prediction starts {starts} with horizon {H} do not fit episodes of {T} steps")
    has_state = "physics_state" in held.episodes[0] and "physics_state" in agent.replay.episodes[0]
    readout = fit_readout(agent, args.readout_windows, args.seed) if has_state else None
    eps = held.episodes
    stack = lambda key, a, b: torch.from_numpy(np.stack([e[key][a:b] for e in eps]))
    totals: dict = {}
    for c in starts:
        obs = stack("obs", 0, c + H + 1)
        if obs.dtype == torch.uint8:
            obs = obs.float() / 255.0 - 0.5
        full = SequenceBatch(obs, stack("action", 0, c + H + 1), stack("obs_valid", 0, c + H + 1),
                             stack("reward", 0, c + H + 1))
        prefix = SequenceBatch(full.obs[:, :c + 1], full.actions[:, :c + 1], full.mask[:, :c + 1])
        future = SequenceBatch(full.obs[:, c + 1:], full.actions[:, c + 1:], full.mask[:, c + 1:], full.rewards[:, c + 1:])
        h, z = open_loop(agent, future, belief(agent, prefix, args.samples), c + 1)
        S, B = args.samples, len(eps)
        per_sample = lambda x: x.reshape(S, B, *x.shape[1:]).double()
        with torch.no_grad():
            em = model.emission(h, z)
            flat = lambda x: x.flatten(2) if x.dim() > 3 else x
            obs_mu = per_sample(flat(em.mean))
            obs_sigma = per_sample(flat(em.stddev))
            parts = {"obs": (obs_mu, obs_sigma, flat(future.obs).double(), future.mask),
                     "reward": (per_sample(model.reward(h, z).mean)[..., None], 1.0, future.rewards.double()[..., None],
                                torch.ones_like(future.mask))}
            if readout is not None:
                W, resid = readout
                parts["state"] = (per_sample(_features(h, z) @ W), resid,
                                  stack("physics_state", c + 1, c + H + 1).double(), torch.ones_like(future.mask))
        for target, (mu, sigma, y, valid) in parts.items():
            for k, v in score(mu, sigma, y, valid).items():
                totals.setdefault(target, {}).setdefault(k, 0)
                totals[target][k] = totals[target][k] + v
    per_horizon, summary, calibration = {}, {}, {}
    for target, t in totals.items():
        n = t["count"].clamp(min=1)
        ph = {"nll": t["nll"] / n, "crps": t["crps"] / n,
              **{f"coverage{round(100 * lv)}": t[f"cov{lv}"] / n for lv in LEVELS}}
        # horizons without one valid target (e.g. k = 1 when every 2nd observation is missing) have no score: None
        scored = (t["count"] > 0).tolist()
        per_horizon[target] = {k: [x if ok else None for x, ok in zip(v.tolist(), scored)] for k, v in ph.items()}
        weight = t["count"] / t["count"].sum()
        summary[target] = {k: float((v * weight).sum()) for k, v in ph.items() if k in ("nll", "crps", "coverage50", "coverage90")}
        calibration[target] = {"levels": list(LEVELS), "observed": [float((ph[f"coverage{round(100 * lv)}"] * weight).sum())
                                                                    for lv in LEVELS]}
    return {"horizon": H, "starts": starts, "episodes": len(eps), "per_horizon": per_horizon, "summary": summary,
            "calibration": calibration, "readout_residual_std": None if readout is None else readout[1].tolist()}


def noise_report(agent) -> dict:
    cfg = agent.cfg
    return {"injected": {k: getattr(cfg, k) for k in ("obs_noise", "action_noise", "missing_every", "missing_prob")},
            "model": agent.model.noise_summary()}


def run(args) -> dict:
    agent = load_run(args.run_dir, args.threads)
    held = heldout_replay(agent, args.heldout_episodes, args.heldout_policy)
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    r = evaluate(agent, held, args)
    return {"run_dir": str(args.run_dir), "env": agent.cfg.env, "inference": agent.cfg.inference,
            "checkpoint_episode": agent.episode, "config": asdict(agent.cfg), "noise": noise_report(agent),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "seconds": time.perf_counter() - t0, **r}


def markdown(r: dict) -> str:
    lines = [f"# Uncertainty of {Path(r['run_dir']).name} ({r['env']}, {r['inference']}, checkpoint after episode "
             f"{r['checkpoint_episode']})", "",
             f"Open-loop predictions over horizons 1..{r['horizon']} from the posterior belief after steps {r['starts']} "
             f"of {r['episodes']} held-out episodes, {r['settings']['samples']} samples each; scores averaged over "
             f"horizons. Injected noise: {r['noise']['injected']}; model: {r['noise']['model']}.", "",
             "| target | NLL (nats) | CRPS | coverage of 50% | coverage of 90% | first scored k | NLL at it | "
             "coverage90 at it |", "|---|---|---|---|---|---|---|---|"]
    for target, s in r["summary"].items():
        ph = r["per_horizon"][target]
        k = next(i for i, x in enumerate(ph["nll"]) if x is not None)
        lines.append(f"| {target} | {s['nll']:.3f} | {s['crps']:.4f} | {s['coverage50']:.3f} | {s['coverage90']:.3f} | "
                     f"{k + 1} | {ph['nll'][k]:.3f} | {ph['coverage90'][k]:.3f} |")
    lines += ["", "A calibrated model covers 0.5 and 0.9. NLL is summed over a target's dimensions, CRPS averaged over "
              "them. The state is read out linearly from [h, z] (ridge fit on training windows).", ""]
    return "\n".join(lines)


def _nan_for_none(per_horizon: dict) -> dict:
    return {k: [float("nan") if x is None else x for x in v] for k, v in per_horizon.items()}


def plot(r: dict, out: Path) -> None:
    targets = list(r["summary"])
    fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets), 3.4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        ph, H = _nan_for_none(r["per_horizon"][target]), r["horizon"]
        for k in sorted({1, min(10, H), H}):
            ax.plot(LEVELS, [ph[f"coverage{round(100 * lv)}"][k - 1] for lv in LEVELS], marker=".", label=f"k={k}")
        ax.plot(LEVELS, r["calibration"][target]["observed"], "k-", lw=2, label="all k")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set_title(target)
        ax.set_xlabel("nominal coverage")
    axes[0][0].set_ylabel("observed coverage")
    axes[0][0].legend()
    fig.suptitle(f"{r['env']} {r['inference']}: calibration of open-loop predictions")
    save(fig, out / "calibration.png")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colours = iter(plt.get_cmap("tab10").colors)
    for target in targets:
        ph = _nan_for_none(r["per_horizon"][target])
        ks = range(1, len(ph["nll"]) + 1)
        colour = next(colours)
        axes[0].plot(ks, ph["nll"], color=colour, label=target)
        axes[1].plot(ks, ph["crps"], color=colour, label=target)
    for target in targets:       # coverage: one colour per (target, interval), after those of the targets
        ph = _nan_for_none(r["per_horizon"][target])
        for level, style in ((90, "-"), (50, "--")):
            axes[2].plot(range(1, len(ph["nll"]) + 1), ph[f"coverage{level}"], style, color=next(colours),
                         label=f"{target}, central {level}%")
    for ax, name in zip(axes, ("NLL (nats)", "CRPS", "observed coverage")):
        ax.set_xlabel("horizon k (steps)")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    axes[0].set_yscale("symlog")
    axes[2].axhline(0.9, color="k", lw=0.5)
    axes[2].axhline(0.5, color="k", lw=0.5)
    fig.suptitle(f"{r['env']} {r['inference']}: open-loop prediction vs horizon")
    save(fig, out / "horizon.png")


def write(r: dict, out: Path) -> None:
    write_report(out, "uncertainty", r, markdown(r))
    plot(r, out)


def main(argv=None) -> int:
    return command_main("uncertainty", parse_args(argv), run, write, markdown)


if __name__ == "__main__":
    sys.exit(main())
