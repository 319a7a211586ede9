"""Toy sequence tasks with known generative models (docs/definitions.md section 3).

- synthetic9 (DKS, linear, 1-d): z_1 ~ N(0, 1); z_t ~ N(z_{t-1} + 0.05, 10); x_t ~ N(0.5 z_t, 20)
  (the drift 0.05 enters as B a with a constant action a = 1).
- vsmc_lgssm (VSMC): T = 10, Dz = 5, Dx = 3, A_ij = 0.42^(|i-j|+1), Q = I, R = 0.1 I, sparse C
  (seeded N(0, 1) entries, each zeroed with probability 1/2).
- synthetic10 (DKS, nonlinear, 1-d): z_1 ~ N(0, 0.01); z_t ~ N(2 sin(z_{t-1}) + z_{t-1}, 5);
  x_t ~ N(0.5 z_t, 5).
Variances above are variances. Each task returns the true model, so exact or estimated
log-likelihoods of the truth are available for comparison.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from world_models.base import ModelState, SequenceBatch, SequenceModel, diag_normal, sample_sequences
from world_models.kalman import LGParams
from world_models.linear_gaussian import LinearGaussianSSM


class Synthetic10SSM(SequenceModel):
    """The true nonlinear model of synthetic10 (no learnable parameters)."""

    def __init__(self):
        super().__init__()
        self.z_dim, self.action_dim, self.obs_shape = 1, 1, (1,)
        self.register_buffer("anchor", torch.zeros(()))

    def initial_state(self, batch_size):
        zeros = self.anchor.new_zeros(batch_size, 1)
        return ModelState(zeros[:, :0], zeros)

    def prior_step(self, state, action, t):
        if t == 0:
            return state.h, diag_normal(torch.zeros_like(state.z), 0.1)
        return state.h, diag_normal(2 * torch.sin(state.z) + state.z, 5 ** 0.5)

    def emission(self, h, z):
        return diag_normal(0.5 * z, 5 ** 0.5)

    def noise_summary(self):
        return {"transition_var": 5.0, "emission_var": 5.0}


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


@dataclass
class ToyTask:
    name: str
    true_model: SequenceModel
    train_length: int
    test_length: int
    constant_action: float
    linear: bool


TASKS = {
    "synthetic9": lambda: ToyTask("synthetic9", LinearGaussianSSM(1, 1, 1, synthetic9_params(), dtype=torch.float64),
                                  25, 50, 1.0, True),
    "vsmc_lgssm": lambda: ToyTask("vsmc_lgssm", LinearGaussianSSM(5, 3, 1, vsmc_params(), dtype=torch.float64),
                                  10, 10, 0.0, True),
    "synthetic10": lambda: ToyTask("synthetic10", Synthetic10SSM().double(), 25, 50, 0.0, False),
}


def make_task(name: str) -> ToyTask:
    if name not in TASKS:
        raise ValueError(f"unknown toy task {name!r}; valid choices: {', '.join(TASKS)}")
    return TASKS[name]()


def generate(task: ToyTask, n: int, length: int, seed: int, dtype=torch.float32) -> tuple[SequenceBatch, torch.Tensor]:
    """n sequences from the true model: (batch with index 0..n-1, true latents)."""
    actions = torch.full((n, length, 1), task.constant_action, dtype=torch.float64)
    z, x = sample_sequences(task.true_model, actions, torch.Generator().manual_seed(seed))
    return SequenceBatch(x.to(dtype), actions.to(dtype), index=torch.arange(n)), z.to(dtype)
