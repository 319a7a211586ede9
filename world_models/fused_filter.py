"""The RSSM's filtering time loop as one autograd operation with a hand-written backward pass.

Why: with the plain loop, the training step at PlaNet sizes (batch 50 x 50) spent about 100 ms of its
260 ms on the per-operation overhead of the 50-step loop (about 35 ATen calls per step forward and
twice that backward, each recorded by autograd). Here the loop runs without autograd, its backward is
the chain rule written out below (about 15 tensor calls per step), and the weight gradients are one
(T N)-row matmul per weight after the loop instead of one small product and one accumulation per step.
The plain loop's training step takes 1.17-1.32x this one's (benchmarks/bench_targets.py,
docs/performance.md). tests/test_fast_paths.py checks values and gradients against the plain rollout
in float64 (and gradcheck).

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

from typing import Optional

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from .base import MLPHead, ModelState
from .rssm import RSSM


def supported(model, head: Optional[MLPHead]) -> bool:
    return (head is not None and type(model) is RSSM and isinstance(model.embed_za[1], nn.ELU)
            and len(head.head) == 3 and isinstance(head.head[1], nn.ELU))


def fused_filter(model: RSSM, head: MLPHead, actions: torch.Tensor, start: ModelState,
                 noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(H, Z, mean, std) of the filtering loop above; noise is eps (T, N, Dz)."""
    embed, gru, first, last = model.embed_za[0], model.gru, head.head[0], head.head[2]
    Dz, Dh = model.z_dim, model.deter_dim
    ones_column = lambda w, b: (F.pad(w, (0, 0, 0, 1)), F.pad(b, (0, 1), value=1.0))   # one more output, always 1
    pre_a = F.linear(actions, *ones_column(embed.weight[:, Dz:], embed.bias))   # [W_a a_{t-1} + b | 1], all steps
    pre_c = F.linear(head.ctx, *ones_column(first.weight[:, Dh:], first.bias))  # [W_c ctx_t + b | 1], all steps
    with_bias = lambda w, b: torch.cat([w, b[:, None]], 1)                      # [W | b] for inputs [x | 1]
    offsets = head.offsets if head.offsets is not None else pre_c.new_zeros(0)
    return _FilterLoop.apply(pre_a, pre_c, offsets, noise, start.h, start.z, embed.weight[:, :Dz],
                             with_bias(gru.weight_ih, gru.bias_ih), with_bias(gru.weight_hh, gru.bias_hh),
                             first.weight[:, :Dh], with_bias(last.weight, last.bias), head.min_std)


def _elu_grad(y: torch.Tensor) -> torch.Tensor:
    """d ELU(a) / da from y = ELU(a): 1 where a > 0, exp(a) = y + 1 elsewhere, i.e. min(y, 0) + 1."""
    return y.clamp(max=0).add_(1)


class _FilterLoop(torch.autograd.Function):
    """Buffers are time-major (T, N, .), so that each step reads and writes contiguous blocks in place;
    (N, T, .) views of them are returned. Writing in place instead of stacking per-step results saves
    about a fifth of the loop's time at PlaNet sizes. The inputs of the GRU and of the head's last layer
    end in a column of ones ([x | 1], [h | 1], [y | 1]; ELU(1) = 1 keeps it) and their weights end in the
    bias, [W | b]: no bias is copied into each step's output, and the weight gradient of each, one matmul
    over all steps, includes the bias gradient."""

    @staticmethod
    def forward(ctx, pre_a, pre_c, offsets, eps, h0, z0, W_z, W_i, W_hh, W_h, W_2, min_std):
        N, T = pre_a.shape[:2]
        Dh, Dz = h0.shape[-1], z0.shape[-1]
        has_off = offsets.numel() > 0
        if has_off:
            d_mu, scale = offsets.transpose(0, 1)[..., :Dz], offsets.transpose(0, 1)[..., Dz:].exp()  # exp(dlogsigma)
        pad_row = lambda w: F.pad(w, (0, 0, 0, 1))                         # the ones column gets + 0
        W_zT, W_iT, W_hhT, W_hT, W_2T = pad_row(W_z).t(), W_i.t(), W_hh.t(), pad_row(W_h).t(), W_2.t()
        time_major_copy = lambda v: v.transpose(0, 1).clone(memory_format=torch.contiguous_format)
        X, Y = time_major_copy(pre_a), time_major_copy(pre_c)  # become [x_t | 1] and [y_t | 1] in place
        new = lambda d: h0.new_empty(T, N, d)
        HS, ZS = h0.new_empty(T + 1, N, Dh + 1), h0.new_empty(T + 1, N, Dz)   # s_0, ..., s_T; HS = [h | 1]
        HS[..., Dh], HS[0, :, :Dh], ZS[0] = 1, h0, z0
        OUT, S, RU, NN, GH, SIG = new(2 * Dz), new(Dz), new(2 * Dh), new(Dh), new(3 * Dh), new(Dz)
        M = new(Dz) if has_off else OUT[..., :Dz]
        Xs, Ys, HSs, ZSs, OUTs = X.unbind(0), Y.unbind(0), HS.unbind(0), ZS.unbind(0), OUT.unbind(0)
        for t in range(T):
            h1, z = HSs[t], ZSs[t]                                           # [h_{t-1} | 1], z_{t-1}
            x1 = F.elu(Xs[t].addmm_(z, W_zT), inplace=True)
            gi, gh = torch.mm(x1, W_iT), torch.mm(h1, W_hhT, out=GH[t])
            r, u = torch.sigmoid(gi[:, :2 * Dh].add_(gh[:, :2 * Dh]), out=RU[t]).split(Dh, 1)  # (r, u) together
            n = torch.tanh(gi[:, 2 * Dh:].addcmul_(r, gh[:, 2 * Dh:]), out=NN[t])
            h = torch.lerp(n, h1[:, :Dh], u, out=HSs[t + 1][:, :Dh])       # n + u (h - n)
            out = torch.mm(F.elu(Ys[t].addmm_(h, W_hT), inplace=True), W_2T, out=OUTs[t])
            raw = out[:, Dz:].contiguous()
            torch.sigmoid(raw, out=SIG[t])
            std = torch.add(F.softplus(raw), min_std, out=S[t])
            mean = out[:, :Dz]
            if has_off:
                std.mul_(scale[t])
                mean = torch.add(mean, d_mu[t], out=M[t])
            torch.addcmul(mean, std, eps[t], out=ZSs[t + 1])
        ctx.has_off = has_off
        ctx.save_for_backward(eps, W_z, W_i, W_hh, W_h, W_2, X, RU, NN, GH, Y, SIG, HS, ZS, S,
                              scale if has_off else offsets)
        return tuple(v.transpose(0, 1) for v in (HS[1:, :, :Dh], ZS[1:], M, S))

    @staticmethod
    @once_differentiable
    def backward(ctx, gH, gZ, gM, gS):
        eps, W_z, W_i, W_hh, W_h, W_2, X, RU, NN, GH, Y, SIG, HS, ZS, S, scale = ctx.saved_tensors
        T, N, Dh = NN.shape
        Dz, He, Hd = ZS.shape[-1], X.shape[-1] - 1, Y.shape[-1] - 1
        W_i, W_hh, W_2 = W_i[:, :He], W_hh[:, :Dh], W_2[:, :Hd]           # the weights without their biases
        time_major = lambda g, like: torch.zeros_like(like) if g is None else g.transpose(0, 1)
        gH, gZ, gM, gS = time_major(gH, NN), time_major(gZ, S), time_major(gM, S), time_major(gS, S)
        new = lambda d: NN.new_empty(T, N, d)
        d_out = new(2 * Dz)                 # d loss / d (m, raw)
        d_y = NN.new_zeros(T, N, Hd + 1)    # d loss / d pre-activation of [y | 1]  (= d pre_c)
        d_gi = new(3 * Dh)                  # d loss / d GRU input gates  W_i x + b_i
        d_gh = new(3 * Dh)                  # d loss / d GRU hidden gates W_hh h + b_hh
        d_x = NN.new_zeros(T, N, He + 1)    # d loss / d pre-activation of [x | 1]  (= d pre_a)
        d_log_scale = new(Dz) if ctx.has_off else None
        # local derivatives of every step at once (one pass over all steps each, not one per step):
        # h' = n + u (h - n), n = tanh(n_pre), n_pre = gi_n + r gh_n, r = sigma(r_pre), u = sigma(u_pre), so
        # d h'/d n_pre = (1 - u)(1 - n^2),  d h'/d u_pre = (h - n) u (1 - u),  d h'/d r_pre = d h'/d n_pre gh_n r (1 - r)
        R, U = RU[..., :Dh], RU[..., Dh:]
        d_n_pre = (1 - U) * (1 - NN * NN)
        d_gates = torch.stack([d_n_pre * GH[..., 2 * Dh:] * R * (1 - R), (HS[:-1, :, :Dh] - NN) * U * (1 - U),
                               d_n_pre], 2)
        d_gates_h = d_gates.clone()                                      # gh_n enters n_pre times r
        d_gates_h[:, :, 2] *= R
        elu_x, elu_y = _elu_grad(X[..., :He]), _elu_grad(Y[..., :Hd])
        dh, dz = torch.zeros_like(NN[0]), torch.zeros_like(ZS[0])
        for t in reversed(range(T)):
            dz = gZ[t] + dz                                              # z' feeds the loss and step t + 1
            torch.add(gM[t], dz, out=d_out[t, :, :Dz])                   # d mu; z' = mu + sigma eps
            d_std = torch.addcmul(gS[t], dz, eps[t])
            if ctx.has_off:                                              # sigma = sigma_0 exp(dlogsigma)
                torch.mul(d_std, S[t], out=d_log_scale[t])
                d_std.mul_(scale[t])
            torch.mul(d_std, SIG[t], out=d_out[t, :, Dz:])               # softplus' = sigmoid
            torch.mul(d_out[t] @ W_2, elu_y[t], out=d_y[t, :, :Hd])
            dh = torch.addmm(gH[t] + dh, d_y[t, :, :Hd], W_h)            # d loss / d h_t
            torch.mul(dh[:, None], d_gates[t], out=d_gi[t].view(N, 3, Dh))      # (r, u, n) gates at once
            torch.mul(dh[:, None], d_gates_h[t], out=d_gh[t].view(N, 3, Dh))
            torch.mul(d_gi[t] @ W_i, elu_x[t], out=d_x[t, :, :He])
            dh = torch.addmm(dh * U[t], d_gh[t], W_hh)                   # d loss / d h_{t-1}
            dz = d_x[t, :, :He] @ W_z                                    # d loss / d z_{t-1}
        flat = lambda v: v.reshape(-1, v.shape[-1])
        # weight gradients: sum over steps and rows of (output gradient)^T [input | 1], one matmul each
        g_W_z = (flat(d_x).t() @ flat(ZS[:-1]))[:He]
        g_W_i, g_W_hh = flat(d_gi).t() @ flat(X), flat(d_gh).t() @ flat(HS[:-1])
        g_W_h = (flat(d_y).t() @ flat(HS[1:]))[:Hd, :Dh]
        g_W_2 = flat(d_out).t() @ flat(Y)
        batch_major = lambda v: v.transpose(0, 1)
        g_off = batch_major(torch.cat([d_out[..., :Dz], d_log_scale], -1)) if ctx.has_off else None  # d (dmu, dlogsigma)
        return batch_major(d_x), batch_major(d_y), g_off, None, dh, dz, g_W_z, g_W_i, g_W_hh, g_W_h, g_W_2, None
