"""Toy sequence tasks with known generative models (docs/definitions.md section 3).

- synthetic9 (DKS, linear, 1-d): z_1 ~ N(0, 1); z_t ~ N(z_{t-1} + 0.05, 10); x_t ~ N(0.5 z_t, 20)
  (the drift 0.05 enters as B a with a constant action a = 1).
- vsmc_lgssm (VSMC): T = 10, Dz = 5, Dx = 3, A_ij = 0.42^(|i-j|+1), Q = I, R = 0.1 I, sparse C
  (seeded N(0, 1) entries, each zeroed with probability 1/2).
- synthetic10 (DKS, nonlinear, 1-d): z_1 ~ N(0, 0.01); z_t ~ N(2 sin(z_{t-1}) + z_{t-1}, 5);
  x_t ~ N(0.5 z_t, 5).
- square (multimodal posterior): z_1 ~ N(0, 1); z_t ~ N(0.9 z_{t-1}, 1); x_t ~ N(z_t^2, 0.5): x tells |z_t| but
  not its sign, so the posterior has a mode for each sign.
- Variants that stress inference: `_missing` (each observation missing with probability 0.5, independently),
  `_gaps` (missing in runs: each step starts a run of 5 missing steps with probability 0.1), `_long` (T = 200).
Variances above are variances. Training and held-out sequences have the same length, so that a gap that grows on
held-out data is not confounded with T. Each task returns the true model, so exact or estimated log-likelihoods of
the truth are available for comparison.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from world_models.base import ModelState, SequenceBatch, SequenceModel, diag_normal, sample_sequences
from world_models.kalman import LGParams
from world_models.linear_gaussian import LinearGaussianSSM


class FixedScalarSSM(SequenceModel):
    """A true 1-d toy model with no learnable parameters and no h_t; subclasses give prior_step and emission."""

    def __init__(self):
        super().__init__()
        self.z_dim, self.action_dim, self.obs_shape = 1, 1, (1,)
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)   # dtype and device, never trained

    def initial_state(self, batch_size):
        zeros = self.anchor.new_zeros(batch_size, 1)
        return ModelState(zeros[:, :0], zeros)


class Synthetic10SSM(FixedScalarSSM):
    """The true nonlinear model of synthetic10."""

    def prior_step(self, state, action, t):
        if t == 0:
            return state.h, diag_normal(torch.zeros_like(state.z), 0.1)
        return state.h, diag_normal(2 * torch.sin(state.z) + state.z, 5 ** 0.5)

    def emission(self, h, z):
        return diag_normal(0.5 * z, 5 ** 0.5)

    def noise_summary(self):
        return {"transition_var": 5.0, "emission_var": 5.0}


class SquareObsSSM(FixedScalarSSM):
    """The true model of `square`: a linear AR(1) latent seen through x = z^2 + noise."""

    def prior_step(self, state, action, t):
        return state.h, diag_normal(0.9 * state.z if t else torch.zeros_like(state.z), 1.0)

    def emission(self, h, z):
        return diag_normal(z * z, 0.5 ** 0.5)

    def noise_summary(self):
        return {"transition_var": 1.0, "emission_var": 0.5}


def synthetic9_params() -> LGParams:
    t = lambda v: torch.tensor(v, dtype=torch.float64)
    return LGParams(A=t([[1.0]]), B=t([[0.05]]), C=t([[0.5]]), Q=t([[10.0]]), R=t([[20.0]]), m0=t([0.0]), P0=t([[1.0]]))


def vsmc_params(seed: int = 0) -> LGParams:
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(5, dtype=torch.float64)
    A = 0.42 ** ((i[:, None] - i[None, :]).abs() + 1)
    C = torch.randn(3, 5, generator=g, dtype=torch.float64) * (torch.rand(3, 5, generator=g) < 0.5)
    return LGParams(A=A, B=torch.zeros(5, 1, dtype=torch.float64), C=C, Q=torch.eye(5, dtype=torch.float64),
                    R=0.1 * torch.eye(3, dtype=torch.float64), m0=torch.zeros(5, dtype=torch.float64),
                    P0=torch.eye(5, dtype=torch.float64))


MISSING = ("none", "random", "runs")


@dataclass
class ToyTask:
    name: str
    true_model: SequenceModel
    length: int                  # of training and of held-out sequences alike
    constant_action: float
    linear: bool
    missing: str = "none"        # MISSING: which observations are hidden (mask False)


def _base_tasks() -> dict:
    return {
        "synthetic9": lambda: ToyTask("synthetic9", LinearGaussianSSM(1, 1, 1, synthetic9_params(), dtype=torch.float64),
                                      25, 1.0, True),
        "vsmc_lgssm": lambda: ToyTask("vsmc_lgssm", LinearGaussianSSM(5, 3, 1, vsmc_params(), dtype=torch.float64),
                                      10, 0.0, True),
        "synthetic10": lambda: ToyTask("synthetic10", Synthetic10SSM().double(), 25, 0.0, False),
        "square": lambda: ToyTask("square", SquareObsSSM().double(), 25, 0.0, False),
    }


def _variants(base: dict) -> dict:
    """Each base task, and synthetic9 / synthetic10 / square with missing observations or long sequences."""
    out = dict(base)
    for name in ("synthetic9", "synthetic10", "square"):
        for suffix, change in (("missing", {"missing": "random"}), ("gaps", {"missing": "runs"}),
                               ("long", {"length": 200})):
            out[f"{name}_{suffix}"] = (lambda name=name, suffix=suffix, change=change:
                                       replace(base[name](), name=f"{name}_{suffix}", **change))
    return out


TASKS = _variants(_base_tasks())


def make_task(name: str) -> ToyTask:
    if name not in TASKS:
        raise ValueError(f"unknown toy task {name!r}; valid choices: {', '.join(TASKS)}")
    return TASKS[name]()


def missing_mask(kind: str, n: int, length: int, g: torch.Generator) -> torch.Tensor:
    """(n, length) bool, False where the observation is hidden: none; random (each with probability 0.5); runs (each
    step starts a run of 5 hidden steps with probability 0.1)."""
    if kind == "none":
        return torch.ones(n, length, dtype=torch.bool)
    if kind == "random":
        return torch.rand(n, length, generator=g) >= 0.5
    if kind == "runs":
        starts = (torch.rand(n, length, generator=g) < 0.1).float()
        padded = torch.nn.functional.pad(starts, (4, 0))[:, None]                  # 4 steps before t = 0
        hidden = torch.nn.functional.max_pool1d(padded, 5, stride=1)[:, 0]          # any start in t-4..t
        return hidden == 0
    raise ValueError(f"unknown missing-observation pattern {kind!r}; valid choices: {', '.join(MISSING)}")


def generate(task: ToyTask, n: int, seed: int, dtype=torch.float32) -> tuple[SequenceBatch, torch.Tensor]:
    """n sequences of task.length steps from the true model: (batch with index 0..n-1 and the task's mask, true
    latents)."""
    g = torch.Generator().manual_seed(seed)
    actions = torch.full((n, task.length, 1), task.constant_action, dtype=torch.float64)
    z, x = sample_sequences(task.true_model, actions, g)
    mask = missing_mask(task.missing, n, task.length, g)
    return SequenceBatch(x.to(dtype), actions.to(dtype), mask, index=torch.arange(n)), z.to(dtype)
