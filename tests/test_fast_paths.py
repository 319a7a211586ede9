"""Every speed-up computes what the plain code computes (benchmarks/bench_targets.py measures the speed)."""
import torch
from torch.nn import functional as F

from world_models.networks import softplus_std


def test_softplus_std_of_a_strided_chunk():
    out = torch.randn(100, 60, dtype=torch.float64)
    raw = out.chunk(2, -1)[1]
    assert not raw.is_contiguous()
    torch.testing.assert_close(softplus_std(raw, 0.1), F.softplus(raw) + 0.1, rtol=1e-15, atol=1e-15)
