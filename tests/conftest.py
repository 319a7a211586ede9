import pytest
import torch

from world_models.base import SequenceBatch, sample_sequences
from world_models.kalman import LGParams
from world_models.linear_gaussian import LinearGaussianSSM


def random_lgssm(seed: int, z_dim: int = 2, obs_dim: int = 2, obs_noise: float = 0.5) -> LinearGaussianSSM:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(z_dim, z_dim, generator=g, dtype=torch.float64)
    A = 0.8 * A / torch.linalg.eigvals(A).abs().max()
    p = LGParams(A=A, B=0.3 * torch.randn(z_dim, 1, generator=g, dtype=torch.float64),
                 C=torch.randn(obs_dim, z_dim, generator=g, dtype=torch.float64),
                 Q=0.5 * torch.eye(z_dim, dtype=torch.float64), R=obs_noise * torch.eye(obs_dim, dtype=torch.float64),
                 m0=torch.zeros(z_dim, dtype=torch.float64), P0=torch.eye(z_dim, dtype=torch.float64))
    return LinearGaussianSSM(z_dim, obs_dim, 1, p, dtype=torch.float64)


def lgssm_data(model, n: int, T: int, seed: int, missing: float = 0.0) -> SequenceBatch:
    g = torch.Generator().manual_seed(seed)
    actions = torch.randn(n, T, 1, generator=g, dtype=torch.float64)
    _, x = sample_sequences(model, actions, g)
    mask = torch.rand(n, T, generator=g) >= missing
    return SequenceBatch(x, actions, mask, index=torch.arange(n))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
