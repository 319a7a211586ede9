"""Gaussian noise with a power-law spectrum along time ("colored" noise), as iCEM samples actions.

For a sequence of length H, with frequencies f_k = k / H (k = 0..H/2, the real FFT's), each sequence is

    y = irfft(c),   c_k = f_k^(-beta / 2) (u_k + i v_k),   u_k, v_k ~ N(0, 1)  (f_0 taken as f_1)

so that its expected power spectrum is E|rfft(y)_k|^2 ∝ f_k^(-beta): beta = 0 is white noise, beta = 1 pink,
beta = 2 brown (a random walk's spectrum); larger beta gives smoother sequences. The imaginary parts of the
components that must be real (k = 0 and, for even H, the Nyquist k = H/2) are dropped and their real parts
scaled by sqrt(2), so that every component keeps the same expected power as with white noise. Each sequence
is then divided by the exact standard deviation of its time steps, sqrt(sum_k m_k |f_k^(-beta/2)|^2) / H
with m_k the number of bins that component k stands for (1 for the real ones, 2 otherwise), so every step
has unit variance for every beta.
"""
from __future__ import annotations

import math
from typing import Optional

import torch


def powerlaw_noise(beta: float, shape: tuple[int, ...], horizon: int, generator: Optional[torch.Generator] = None,
                   device: Optional[torch.device] = None) -> torch.Tensor:
    """Noise of shape (*shape, horizon), unit variance per element, power spectrum ∝ f^-beta along the last axis."""
    if beta < 0:
        raise ValueError(f"the noise exponent beta must be >= 0, got {beta}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    if horizon == 1 or beta == 0:
        return torch.randn((*shape, horizon), generator=generator, device=device)
    f = torch.fft.rfftfreq(horizon, device=device)
    f[0] = f[1]
    amplitude = f ** (-beta / 2)                                        # |c_k| scale
    real_only = torch.zeros_like(f, dtype=torch.bool)
    real_only[0] = True
    if horizon % 2 == 0:
        real_only[-1] = True
    re = torch.randn((*shape, f.numel()), generator=generator, device=device)
    im = torch.randn((*shape, f.numel()), generator=generator, device=device)
    re = torch.where(real_only, re * math.sqrt(2), re)
    im = torch.where(real_only, torch.zeros_like(im), im)
    y = torch.fft.irfft(torch.complex(re * amplitude, im * amplitude), n=horizon)
    # Var(y_t) = sum_k m_k E|c_k|^2 / H^2 with E|c_k|^2 = 2 amplitude_k^2 (both parts, or sqrt(2)^2 for the real
    # ones); m_k = 1 for the real components, 2 for the others (they stand for k and H - k)
    bins = torch.where(real_only, 1.0, 2.0)
    std = torch.sqrt((bins * 2 * amplitude ** 2).sum()) / horizon
    return y / std
