"""Filter fitted with cosine 1e-2 x FSTEPS, then smoother fine-tuned with cosine SLR x SSTEPS; curves printed.
usage: fresh_smoother.py RUN_DIR NAME FSTEPS SLR SSTEPS"""
import sys, json, time, math, pathlib
import torch
from analysis.run_loading import load_run, heldout_replay, windows
from analysis.decompose import EncoderCheckpoints, smoother_from_filter
from world_models import bounds
from world_models.posteriors import Objective, make_posterior
from world_models.posteriors.registry import FILTER
from world_models.posteriors.losses import frozen
import world_models.training as wt

run_dir, name, fsteps, slr, ssteps = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(1)
agent = load_run(pathlib.Path(run_dir), 1)
model = agent.model
heldout = windows(heldout_replay(agent, 4, "eval", progress=False), 16, 50, 0)
data = windows(agent.replay, 1000, 50, 2)
L = 50
def ho(q):
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(123)
        return float(bounds.elbo(model, q, heldout, 256).mean()) / L
def fit(q, lr, steps, seed, tag):
    checks = EncoderCheckpoints(model, q, data, steps, seed + 8)
    OPT = []
    mk = wt.make_adam
    wt.make_adam = lambda *a, **k: OPT.append(mk(*a, **k)) or OPT[-1]
    t0 = time.perf_counter()
    curve = []
    def after(step, m):
        for g in OPT[0].param_groups: g['lr'] = lr * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
        checks(step)
        if (step + 1) % 200 == 0:
            curve.append((step + 1, float(checks.checks[-1][1].mean()) / L, ho(q)))
            print(name, tag, curve[-1], f"{time.perf_counter()-t0:.0f}s", flush=True)
    wt.train(lambda b: q.training_loss(model, b, Objective()), q.parameters(), data, steps, 64, lr=lr, seed=seed + 7,
             progress=after, skip_nonfinite=True)
    wt.make_adam = mk
    return {"curve": curve, "kept": checks.keep_best(), "final_heldout": ho(q), "seconds": time.perf_counter() - t0}
with frozen(model):
    own = ho(agent.posterior)
    print(name, "own", own, flush=True)
    f = make_posterior(FILTER, model)
    rf = fit(f, 1e-2, fsteps, 0, "filter")
    s = smoother_from_filter(model, f)
    rs = fit(s, slr, ssteps, 1, "smoother")
out = {"name": name, "own_heldout": own, "filter": rf, "smoother": rs, "fsteps": fsteps, "slr": slr, "ssteps": ssteps}
print(json.dumps(out), flush=True)
json.dump(out, open(f"/root/exp/smoother_{name}.json", "w"))
