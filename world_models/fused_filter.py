"""The RSSM's filtering time loop as one autograd operation with a hand-written backward pass.

Why: the training step at PlaNet sizes (batch 50 x 50) spends about 100 ms of its 260 ms on the
per-operation overhead of the 50-step loop (about 35 ATen calls per step forward and twice that
backward, each recorded by autograd); docs/performance.md. Here the loop runs without autograd, its
backward is the chain rule written out below (about 25 tensor calls per step), and the weight
gradients are one (T N)-row matmul per weight after the loop instead of one small product and one
accumulation per step. tests/test_fused_filter.py checks values and gradients against the plain
rollout in float64 (and gradcheck).

The loop, for each step t with s_{t-1} = (h, z) (PlaNet's RSSM with the amortized head of
posteriors/amortized.py; the first layers of the embedding and of the head are split into the part
applied inside the loop and the part precomputed for all steps, `pre_a` and `pre_c`):

    x   = ELU(pre_a_t + W_z z)                      pre_a_t = W_a a_{t-1} + b  (embedding of [z, a])
    r   = sigma(W_ir x + b_ir + W_hr h + b_hr)      GRU (PyTorch's gate order r, u, n)
    u   = sigma(W_iu x + b_iu + W_hu h + b_hu)
    n   = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h'  = n + u (h - n)
    y   = ELU(pre_c_t + W_h h')                     pre_c_t = W_c ctx_t + b    (head's first layer)
    (m, raw) = W_2 y + b_2
    mu  = m + dmu_t,  sigma = (softplus(raw) + min_std) exp(dlogsigma_t)   (offsets: semi-amortized)
    z'  = mu + sigma eps_t

It returns H, Z, the posterior means and stds (N, T, .), the same as rollout()'s time loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from .base import ModelState
from .rssm import RSSM


@dataclass
class FusedHead:
    """What a posterior hands to the fused loop: its head (Linear, ELU, Linear) on [h_t, ctx_t], its
    min std, the head's context (N, T, C) and optional offsets (N, T, 2 Dz) of (mean, log std)."""

    head: nn.Sequential
    min_std: float
    ctx: torch.Tensor
    offsets: Optional[torch.Tensor] = None


def supported(model, head: Optional[FusedHead]) -> bool:
    return (head is not None and type(model) is RSSM and isinstance(model.embed_za[1], nn.ELU)
            and len(head.head) == 3 and isinstance(head.head[1], nn.ELU))


def fused_filter(model: RSSM, head: FusedHead, actions: torch.Tensor, start: ModelState,
                 noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(H, Z, mean, std) of the filtering loop above; noise is eps (T, N, Dz)."""
    embed, gru, first, last = model.embed_za[0], model.gru, head.head[0], head.head[2]
    Dz, Dh = model.z_dim, model.deter_dim
    pre_a = F.linear(actions, embed.weight[:, Dz:], embed.bias)       # W_a a_{t-1} + b, all steps at once
    pre_c = F.linear(head.ctx, first.weight[:, Dh:], first.bias)      # W_c ctx_t + b, all steps at once
    offsets = head.offsets if head.offsets is not None else pre_c.new_zeros(0)
    return _FilterLoop.apply(pre_a, pre_c, offsets, noise, start.h, start.z, embed.weight[:, :Dz],
                             gru.weight_ih, gru.bias_ih, gru.weight_hh, gru.bias_hh, first.weight[:, :Dh],
                             last.weight, last.bias, head.min_std)


def _elu_grad(y: torch.Tensor) -> torch.Tensor:
    """d ELU(a) / da from y = ELU(a): 1 where a > 0, exp(a) = y + 1 elsewhere, i.e. min(y, 0) + 1."""
    return y.clamp(max=0).add_(1)


class _FilterLoop(torch.autograd.Function):
    """Buffers are time-major (T, N, .), so that each step reads and writes contiguous blocks in place;
    (N, T, .) views of them are returned. Writing in place instead of stacking per-step results saves
    about a fifth of the loop's time at PlaNet sizes."""

    @staticmethod
    def forward(ctx, pre_a, pre_c, offsets, eps, h0, z0, W_z, W_i, b_i, W_hh, b_hh, W_h, W_2, b_2, min_std):
        N, T = pre_a.shape[:2]
        Dh, Dz = h0.shape[-1], z0.shape[-1]
        has_off = offsets.numel() > 0
        if has_off:
            d_mu, scale = offsets.transpose(0, 1)[..., :Dz], offsets.transpose(0, 1)[..., Dz:].exp()  # exp(dlogsigma)
        W_zT, W_iT, W_hhT, W_hT, W_2T = W_z.t(), W_i.t(), W_hh.t(), W_h.t(), W_2.t()
        time_major_copy = lambda v: v.transpose(0, 1).clone(memory_format=torch.contiguous_format)
        X, Y = time_major_copy(pre_a), time_major_copy(pre_c)  # become x_t and y_t in place
        new = lambda d, steps=T: h0.new_empty(steps, N, d)
        HS, ZS = new(Dh, T + 1), new(Dz, T + 1)                # s_0, ..., s_T: s_0 first, for the backward pass
        HS[0], ZS[0] = h0, z0
        H, Z = HS[1:], ZS[1:]
        M, S, RU, NN, GH, SIG = new(Dz), new(Dz), new(2 * Dh), new(Dh), new(3 * Dh), new(Dz)
        h, z = HS[0], ZS[0]
        for t in range(T):
            F.elu(X[t].addmm_(z, W_zT), inplace=True)
            gi = torch.addmm(b_i, X[t], W_iT)
            gh = torch.addmm(b_hh, h, W_hhT, out=GH[t])
            r, u = torch.sigmoid(gi[:, :2 * Dh].add_(gh[:, :2 * Dh]), out=RU[t]).split(Dh, 1)  # (r, u) together
            n = torch.tanh(gi[:, 2 * Dh:].addcmul_(r, gh[:, 2 * Dh:]), out=NN[t])
            h = torch.lerp(n, h, u, out=H[t])                  # n + u (h - n)
            F.elu(Y[t].addmm_(h, W_hT), inplace=True)
            out = torch.addmm(b_2, Y[t], W_2T)
            raw = out[:, Dz:].contiguous()
            torch.sigmoid(raw, out=SIG[t])
            torch.add(F.softplus(raw), min_std, out=S[t])
            mean, std = out[:, :Dz], S[t]
            if has_off:
                std.mul_(scale[t])
                mean = mean + d_mu[t]
            M[t] = mean
            z = torch.addcmul(M[t], std, eps[t], out=Z[t])
        ctx.has_off = has_off
        ctx.save_for_backward(eps, W_z, W_i, W_hh, W_h, W_2, X, RU, NN, GH, Y, SIG, HS, ZS, S,
                              scale if has_off else offsets)
        return tuple(v.transpose(0, 1) for v in (H, Z, M, S))

    @staticmethod
    @once_differentiable
    def backward(ctx, gH, gZ, gM, gS):
        eps, W_z, W_i, W_hh, W_h, W_2, X, RU, NN, GH, Y, SIG, HS, ZS, S, scale = ctx.saved_tensors
        H, Z = HS[1:], ZS[1:]
        T, N, Dh = H.shape
        Dz = Z.shape[-1]
        time_major = lambda g, like: torch.zeros_like(like) if g is None else g.transpose(0, 1)
        gH, gZ, gM, gS = time_major(gH, H), time_major(gZ, Z), time_major(gM, Z), time_major(gS, S)
        new = lambda d: H.new_empty(T, N, d)
        d_out = new(2 * Dz)           # d loss / d (m, raw)
        d_y = new(Y.shape[-1])        # d loss / d pre-activation of y  (= d pre_c)
        d_gi = new(3 * Dh)            # d loss / d GRU input gates  W_i x + b_i
        d_gh = new(3 * Dh)            # d loss / d GRU hidden gates W_hh h + b_hh
        d_x = new(X.shape[-1])        # d loss / d pre-activation of x  (= d pre_a)
        d_log_scale = new(Dz) if ctx.has_off else None
        # local derivatives of every step at once (one pass over all steps each, not one per step):
        # h' = n + u (h - n), n = tanh(n_pre), n_pre = gi_n + r gh_n, r = sigma(r_pre), u = sigma(u_pre), so
        # d h'/d n_pre = (1 - u)(1 - n^2),  d h'/d u_pre = (h - n) u (1 - u),  d h'/d r_pre = d h'/d n_pre gh_n r (1 - r)
        R, U = RU[..., :Dh], RU[..., Dh:]
        d_n_pre = (1 - U) * (1 - NN * NN)
        d_gates = torch.stack([d_n_pre * GH[..., 2 * Dh:] * R * (1 - R), (HS[:-1] - NN) * U * (1 - U), d_n_pre], 2)
        d_gates_h = d_gates.clone()                                      # gh_n enters n_pre times r
        d_gates_h[:, :, 2] *= R
        elu_x, elu_y = _elu_grad(X), _elu_grad(Y)
        dh, dz = torch.zeros_like(HS[0]), torch.zeros_like(ZS[0])
        for t in reversed(range(T)):
            dz = gZ[t] + dz                                              # z' feeds the loss and step t + 1
            torch.add(gM[t], dz, out=d_out[t, :, :Dz])                   # d mu; z' = mu + sigma eps
            d_std = torch.addcmul(gS[t], dz, eps[t])
            if ctx.has_off:                                              # sigma = sigma_0 exp(dlogsigma)
                torch.mul(d_std, S[t], out=d_log_scale[t])
                d_std.mul_(scale[t])
            torch.mul(d_std, SIG[t], out=d_out[t, :, Dz:])               # softplus' = sigmoid
            torch.mul(d_out[t] @ W_2, elu_y[t], out=d_y[t])
            dh = torch.addmm(gH[t] + dh, d_y[t], W_h)                    # d loss / d h_t
            torch.mul(dh[:, None], d_gates[t], out=d_gi[t].view(N, 3, Dh))      # (r, u, n) gates at once
            torch.mul(dh[:, None], d_gates_h[t], out=d_gh[t].view(N, 3, Dh))
            torch.mul(d_gi[t] @ W_i, elu_x[t], out=d_x[t])
            dh = torch.addmm(dh * U[t], d_gh[t], W_hh)                   # d loss / d h_{t-1}
            dz = d_x[t] @ W_z                                            # d loss / d z_{t-1}
        flat = lambda v: v.reshape(T * N, -1)
        # weight gradients: sum over steps and rows of (output gradient)^T (input), one matmul each
        g_W_z = flat(d_x).t() @ flat(ZS[:-1])
        g_W_i, g_b_i = flat(d_gi).t() @ flat(X), flat(d_gi).sum(0)
        g_W_hh, g_b_hh = flat(d_gh).t() @ flat(HS[:-1]), flat(d_gh).sum(0)
        g_W_h = flat(d_y).t() @ flat(H)
        g_W_2, g_b_2 = flat(d_out).t() @ flat(Y), flat(d_out).sum(0)
        batch_major = lambda v: v.transpose(0, 1)
        g_off = batch_major(torch.cat([d_out[..., :Dz], d_log_scale], -1)) if ctx.has_off else None  # d (dmu, dlogsigma)
        return (batch_major(d_x), batch_major(d_y), g_off, None, dh, dz, g_W_z, g_W_i, g_b_i, g_W_hh, g_b_hh,
                g_W_h, g_W_2, g_b_2, None)
