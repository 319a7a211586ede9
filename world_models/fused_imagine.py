"""The RSSM's imagination loop for planning: the summed predicted rewards of N action sequences.

    h_k = GRU(h_{k-1}, ELU(W_z z_{k-1} + W_a a_k + b))
    z_k = mu(h_k) + sigma(h_k) eps_k                         (eps_k = 0: the prior mean)
    J   = sum_k w_3 . y_k + b_3 = w_3 . (sum_k y_k) + H b_3  y_k: the reward MLP's last hidden layer

It computes what the step-by-step loop over model.prior_step and model.reward computes
(tests/test_fast_paths.py) with fewer passes over memory:
- biases ride inside the matmuls: each layer's input buffer carries a column of ones and its weight is
  [W | b], so no bias is first copied into each output (a GRU gate matmul at 1000 rows: 1.51 vs 1.69 ms),
  and the GRU's r and u gates take their input and hidden parts in one matmul (no separate sum);
- every intermediate is written in place into buffers allocated once per call, and the weights are laid
  out once per decision (imagination_weights);
- the reward head's last linear layer is applied once, to the summed hidden layer.
At PlaNet sizes the objective takes 0.83 of the plain loop's time (1000 candidates, horizon 12;
docs/performance.md).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn
from torch.nn import functional as F

from .networks import elu_
from .rssm import RSSM


def supported(model) -> bool:
    if type(model) is not RSSM or len(model.reward_net) != 5:
        return False
    return all(isinstance(a, nn.ELU) for a in (model.embed_za[1], model.prior_net[1], model.reward_net[1],
                                                model.reward_net[3]))


class ImaginationWeights(NamedTuple):
    """The model's weights laid out for the state buffer below, with each bias as a column ([W | b]) and
    transposed; fixed while the model is (one planning decision), so prepared once per decision."""

    embed: torch.Tensor     # [W_z | W_a | b]             on [z | a | 1]
    gru_ru: torch.Tensor    # [W_i | b_i + b_h | W_h] (r, u) on [x | 1 | h]
    gru_in: torch.Tensor    # [W_in | b_in]                on [x | 1]
    gru_hn: torch.Tensor    # [b_hn | W_hn]                on [1 | h]
    prior1: torch.Tensor    # [b | W]                      on [1 | h]
    prior2: torch.Tensor    # [W | b]                      on [hidden | 1]
    reward1: torch.Tensor   # [b | W]                      on [1 | h | z]
    reward2: torch.Tensor   # [W | b]                      on [hidden | 1]


def imagination_weights(model: RSSM) -> ImaginationWeights:
    gru, Dh = model.gru, model.deter_dim
    W_i, W_h, b_i, b_h = gru.weight_ih, gru.weight_hh, gru.bias_ih, gru.bias_hh
    ru, n = slice(0, 2 * Dh), slice(2 * Dh, 3 * Dh)
    bias_first = lambda m: torch.cat([m.bias[:, None], m.weight], 1).t()
    bias_last = lambda m: torch.cat([m.weight, m.bias[:, None]], 1).t()
    with torch.no_grad():
        return ImaginationWeights(
            bias_last(model.embed_za[0]), torch.cat([W_i[ru], (b_i + b_h)[ru, None], W_h[ru]], 1).t(),
            torch.cat([W_i[n], b_i[n, None]], 1).t(), torch.cat([b_h[n, None], W_h[n]], 1).t(),
            bias_first(model.prior_net[0]), bias_last(model.prior_net[2]), bias_first(model.reward_net[0]),
            bias_last(model.reward_net[2]))


@torch.no_grad()
def imagined_reward_sum(model: RSSM, h0: torch.Tensor, z0: torch.Tensor, actions: torch.Tensor,
                        noise: Optional[torch.Tensor], weights: Optional[ImaginationWeights] = None) -> torch.Tensor:
    """J (N,) for actions (N, H, A) from s_0 = (h0, z0) (one row, or N); noise (H, N, Dz) or None for the
    prior means; weights: imagination_weights(model), prepared here when not given."""
    w = weights if weights is not None else imagination_weights(model)
    N, H = actions.shape[:2]
    Dz, Dh = model.z_dim, model.deter_dim
    p1, r1, r2, r3 = model.prior_net[0], model.reward_net[0], model.reward_net[2], model.reward_net[4]
    A, He = actions.shape[-1], model.embed_za[0].out_features
    # One row of the state buffer: [x_k | 1 | h_{k-1} | z_{k-1} | a_k | 1]. Every layer reads a contiguous
    # run of it that includes a ones column, and its weight carries the bias in that column (see
    # ImaginationWeights); the GRU's r and u gates get their input and hidden parts summed by one matmul.
    cx, ch, cz, ca = slice(0, He), slice(He + 1, He + 1 + Dh), slice(He + 1 + Dh, He + 1 + Dh + Dz), \
        slice(He + 1 + Dh + Dz, He + 1 + Dh + Dz + A)
    S = h0.new_empty(2, N, He + 1 + Dh + Dz + A + 1)   # two: step k reads s_{k-1} from one, writes s_k to the other
    S[:, :, He], S[:, :, -1] = 1, 1
    S[1, :, ch], S[1, :, cz] = h0, z0
    P, Y = (h0.new_ones(N, d + 1) for d in (p1.out_features, r1.out_features))        # [hidden | 1]
    RU, GN, HN, OUT, Y2 = (h0.new_empty(N, d) for d in (2 * Dh, Dh, Dh, 2 * Dz, r2.out_features))
    hidden_sum = h0.new_zeros(N, r2.out_features)
    scratch = h0.new_empty(N, max(He, p1.out_features, r1.out_features, r2.out_features))   # for elu_
    for k in range(H):
        prev, cur = S[(k + 1) % 2], S[k % 2]
        prev[:, ca] = actions[:, k]
        elu_(torch.mm(prev[:, cz.start:], w.embed, out=prev[:, cx]), scratch)   # x_k
        r, u = torch.mm(prev[:, :ch.stop], w.gru_ru, out=RU).sigmoid_().split(Dh, 1)
        gh_n = torch.mm(prev[:, He:ch.stop], w.gru_hn, out=HN)
        n = torch.mm(prev[:, :He + 1], w.gru_in, out=GN).addcmul_(r, gh_n).tanh_()
        torch.lerp(n, prev[:, ch], u, out=cur[:, ch])                            # h_k = n + u (h_{k-1} - n)
        elu_(torch.mm(cur[:, He:ch.stop], w.prior1, out=P[:, :-1]), scratch)
        out = torch.mm(P, w.prior2, out=OUT)                                     # (mu, raw std)
        if noise is None:
            cur[:, cz] = out[:, :Dz]
        else:
            std = F.softplus(out[:, Dz:].contiguous()).add_(model.min_std)
            torch.addcmul(out[:, :Dz], std, noise[k], out=cur[:, cz])            # z_k = mu + sigma eps_k
        elu_(torch.mm(cur[:, He:cz.stop], w.reward1, out=Y[:, :-1]), scratch)
        hidden_sum.add_(elu_(torch.mm(Y, w.reward2, out=Y2), scratch))
    return torch.addmv(r3.bias.mul(H), hidden_sum, r3.weight[0])
