"""Planning objectives built from a world model.

imagined_return: from the belief s_{t-1} = (h_{t-1}, z_{t-1}) (the model state after filtering the
observations up to step t-1), each candidate a_{0:H-1} is scored by the model's prior rollout

    h_{t+k}, p(z_{t+k} | s_{t+k-1}, a_k) = model.prior_step(s_{t+k-1}, a_k, t+k)
    z_{t+k} ~ p(z_{t+k} | .)  (latent="sample", PlaNet)  or  its mean (latent="mean", deterministic)
    J(a) = sum_{k=0}^{H-1} E[r | h_{t+k}, z_{t+k}]

batched over the N candidates at every step, without gradients. For the RSSM the loop runs in
world_models/fused_imagine.py (all latent noise drawn at once, intermediates written in place).
"""
from __future__ import annotations

from typing import Optional

import torch

from world_models.base import ModelState, SequenceModel
from world_models.fused_imagine import imagination_weights, imagined_reward_sum, supported, workspace

from .base import Objective

LATENTS = ("sample", "mean")


def _single(x: torch.Tensor, name: str) -> torch.Tensor:
    x = x.unsqueeze(0) if x.dim() == 1 else x
    if x.shape[0] != 1:
        raise ValueError(f"imagined_return plans from one belief state; state.{name} has batch size {x.shape[0]}")
    return x


def imagined_return(model: SequenceModel, state: ModelState, t: int = 1, latent: str = "sample",
                    generator: Optional[torch.Generator] = None) -> Objective:
    """The objective J(actions (N, H, A)) -> (N,) above. state holds h (1, deter) and z (1, z_dim)
    (or unbatched); t >= 1 is the time index of the first imagined step, so that models use their
    transition, not the initial prior. With latent="sample" and a generator, each call draws its
    latents reproducibly from it (the global RNG is forked and restored around the call)."""
    if latent not in LATENTS:
        raise ValueError(f"unknown latent mode {latent!r}; valid choices: {', '.join(LATENTS)}")
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"t must be an integer >= 1 (t = 0 would use the initial prior p(z_1)), got {t!r}")
    if not model.has_reward:
        raise ValueError(f"{type(model).__name__} has no reward head to plan with")
    h0, z0 = _single(state.h, "h"), _single(state.z, "z")
    # the RSSM: world_models/fused_imagine.py, the same values in fewer operations; its weights laid out once
    # here, its buffers kept between calls
    weights = imagination_weights(model) if supported(model) else None
    buffers, noise = None, torch.empty(0)

    @torch.no_grad()
    def objective(actions: torch.Tensor) -> torch.Tensor:
        nonlocal buffers, noise
        if actions.dim() != 3 or actions.shape[-1] != model.action_dim:
            raise ValueError(f"actions must be (N, H, {model.action_dim}), got {tuple(actions.shape)}")
        actions = actions.to(z0)
        n = actions.shape[0]
        seed = None if generator is None or latent == "mean" else int(torch.randint(0, 2**62, (1,), generator=generator))
        if weights is not None:
            # all latent noise at once, from a generator seeded as the plain path seeds the global RNG below
            # (same draws; torch.manual_seed also reseeds every accelerator, about 1 ms per call)
            eps = None
            if latent == "sample":      # drawn on the CPU, into a buffer kept between calls
                local = None if seed is None else torch.Generator().manual_seed(seed)
                shape = (actions.shape[1], n, model.z_dim)
                noise = torch.randn(shape, generator=local, out=noise if noise.shape == shape else None)
                eps = noise.to(z0)
            buffers = workspace(model, n, actions.shape[2], z0, reuse=buffers)
            return imagined_reward_sum(model, h0, z0, actions, eps, weights, ws=buffers)
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            s = ModelState(h0.expand(n, *h0.shape[1:]), z0.expand(n, *z0.shape[1:]))
            total = actions.new_zeros(n)
            for k in range(actions.shape[1]):
                h, prior = model.prior_step(s, actions[:, k], t + k)
                z = prior.mean if latent == "mean" else prior.sample()
                total += model.reward(h, z).mean
                s = ModelState(h, z)
        return total

    return objective
