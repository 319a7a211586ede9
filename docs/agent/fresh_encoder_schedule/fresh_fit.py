"""Experiment: how well is the fresh filter fitted to a frozen agent model? One variant per call.
usage: fresh_fit.py RUN_DIR VARIANT_NAME LR STEPS INIT(scratch|own) SEED [SCHEDULE none|halve]"""
import sys, json, time, copy, math
import torch
from analysis.run_loading import load_run, heldout_replay, windows
from analysis.decompose import EncoderCheckpoints
from world_models import bounds
from world_models.posteriors import Objective, make_posterior
from world_models.posteriors.registry import FILTER
from world_models.posteriors.losses import frozen
from world_models.training import train

run_dir, name, lr, steps, init, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
torch.set_num_threads(1)
agent = load_run(__import__("pathlib").Path(run_dir), 1)
model = agent.model
held = heldout_replay(agent, 4, "eval", progress=False)
length = 50
heldout = windows(held, 16, length, 0)
data = windows(agent.replay, 1000, length, 2)
q = copy.deepcopy(agent.posterior) if init == "own" else make_posterior(FILTER, model)
for p in q.parameters(): p.requires_grad_(True)
schedule = sys.argv[7] if len(sys.argv) > 7 else "none"
import world_models.training as wt
_mk = wt.make_adam
OPT = []
def _capture(*a, **k):
    OPT.append(_mk(*a, **k)); return OPT[-1]
wt.make_adam = _capture
checks = EncoderCheckpoints(model, q, data, steps, seed + 8)
t0 = time.perf_counter()
def ho():
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(123)
        return bounds.elbo(model, q, heldout, 256)
curve = []
def after(step):
    if schedule == 'cosine':
        for g in OPT[0].param_groups: g['lr'] = lr * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
    checks(step)
    if (step + 1) % 100 == 0:
        curve.append((step + 1, float(checks.checks[-1][1].mean()) / length, float(ho().mean()) / length))
        print(name, curve[-1], f"{time.perf_counter()-t0:.0f}s", flush=True)
with frozen(model):
    start = float(ho().mean()) / length
    own_elbo = None
    q0 = agent.posterior
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(123); own_elbo = float(bounds.elbo(model, q0, heldout, 256).mean()) / length
    print(name, "own encoder heldout", own_elbo, "start", start, flush=True)
    hist = train(lambda b: q.training_loss(model, b, Objective()), q.parameters(), data, steps, 64, lr=lr, seed=seed + 7,
                 progress=lambda s, m: after(s), skip_nonfinite=True)
    rec = checks.keep_best()
    final = float(ho().mean()) / length
out = {"name": name, "lr": lr, "steps": steps, "init": init, "seed": seed, "schedule": schedule, "own_heldout": own_elbo, "start_heldout": start,
       "curve_valid_heldout": curve, "kept": rec, "final_heldout": final, "seconds": time.perf_counter() - t0}
print(json.dumps(out), flush=True)
json.dump(out, open(f"/root/exp/fresh_{name}.json", "w"))
