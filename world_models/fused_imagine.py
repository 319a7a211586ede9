"""The RSSM's imagination loop for planning: the summed predicted rewards of N action sequences.

    h_k = GRU(h_{k-1}, ELU(W_z z_{k-1} + W_a a_k + b))
    z_k = mu(h_k) + sigma(h_k) eps_k                         (eps_k = 0: the prior mean)
    J   = sum_k w_3 . y_k + b_3 = w_3 . (sum_k y_k) + H b_3  y_k: the reward MLP's last hidden layer

It computes what the step-by-step loop over model.prior_step and model.reward computes
(tests/test_fast_paths.py) with fewer passes over memory:
- biases ride inside the matmuls: each layer's input buffer carries a column of ones and its weight is
  [W | b], so no bias is first copied into each output (a GRU gate matmul at 1000 rows: 1.51 vs 1.69 ms),
  and the GRU's r and u gates take their input and hidden parts in one matmul (no separate sum);
- every intermediate is written in place into buffers (Workspace) that the planning objective keeps
  across the calls of one decision, as it keeps the weights laid out once (imagination_weights);
- the reward head's last linear layer is applied once, to the summed hidden layer;
- the elementwise steps (ELUs, the GRU's gate update, the latent sample) run in place on those buffers.
At PlaNet sizes (1000 candidates, horizon 12, 10 CEM iterations) a decision takes 0.74-0.78 of the plain loop's
time (three runs of benchmarks/bench_targets.py; docs/performance.md). C kernels for the elementwise steps made it
1.11-1.14x faster, but only 5-9% of the default agent's episodes per core-hour once iCEM cut planning to a third,
and were removed (issue 16's rule: a fast path stays if it pays at least 10%; docs/throughput).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from .networks import elu_, softplus_std
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


class StepViews(NamedTuple):
    """Views of the state buffer's rows [x | 1 | h | z | a | 1] that one imagined step reads (s_{k-1}) and
    writes (s_k)."""

    a: torch.Tensor              # a_k                      (written from the actions)
    x: torch.Tensor              # x_k                      (the embedding's output)
    z_a_1: torch.Tensor          # [z_{k-1} | a_k | 1]      (the embedding's input)
    x_1_h: torch.Tensor          # [x_k | 1 | h_{k-1}]      (the r, u gates' input)
    one_h: torch.Tensor          # [1 | h_{k-1}]            (the hidden n gate's input)
    x_1: torch.Tensor            # [x_k | 1]                (the input n gate's input)
    h_prev: torch.Tensor         # h_{k-1}
    h: torch.Tensor              # h_k                      (in s_k)
    one_h_new: torch.Tensor      # [1 | h_k]                (the prior MLP's input)
    z: torch.Tensor              # z_k                      (in s_k)
    one_h_z_new: torch.Tensor    # [1 | h_k | z_k]          (the reward MLP's input)


class ElementwiseSteps:
    """The loop's elementwise steps, in place (2-4 passes over memory each)."""

    def __init__(self, rows: int, width: int, like: torch.Tensor):
        self.scratch = like.new_empty(rows, width)       # for elu_

    def elu_(self, x: torch.Tensor) -> torch.Tensor:
        return elu_(x, self.scratch)

    def add_elu_(self, acc: torch.Tensor, y: torch.Tensor) -> None:
        acc.add_(elu_(y, self.scratch))

    def gru_(self, h: torch.Tensor, ru: torch.Tensor, gi_n: torch.Tensor, gh_n: torch.Tensor, h_prev: torch.Tensor) -> None:
        """h = n + u (h_prev - n), r, u = sigmoid(ru), n = tanh(gi_n + r gh_n); overwrites ru and gi_n."""
        r, u = ru.sigmoid_().split(h.shape[1], 1)
        torch.lerp(gi_n.addcmul_(r, gh_n).tanh_(), h_prev, u, out=h)

    def sample_(self, z: torch.Tensor, mu_raw: torch.Tensor, eps: torch.Tensor, min_std: float) -> None:
        """z = mu + (softplus(raw) + min_std) eps, mu_raw = [mu | raw]."""
        D = z.shape[1]
        torch.addcmul(mu_raw[:, :D], softplus_std(mu_raw[:, D:], min_std), eps, out=z)


class Workspace(NamedTuple):
    """The loop's buffers for N rows of one model: the state buffer (two rows [x | 1 | h | z | a | 1] per
    candidate: step k reads s_{k-1} from one and writes s_k to the other), the views a step takes of it for
    each parity of k, the layers' outputs and the elementwise steps. Kept by the planning objective across
    the calls of one decision, so that its megabytes are not allocated and faulted in on every call."""

    key: tuple
    state: torch.Tensor
    views: tuple[StepViews, StepViews]
    prior_in: torch.Tensor       # [prior hidden | 1]
    reward_in: torch.Tensor      # [reward hidden 1 | 1]
    ru: torch.Tensor             # the r, u gates' pre-activations
    gi_n: torch.Tensor
    gh_n: torch.Tensor
    prior_out: torch.Tensor      # [mu | raw std]
    reward_hidden: torch.Tensor  # the reward MLP's last hidden layer y_k
    hidden_sum: torch.Tensor     # sum_k y_k
    ops: ElementwiseSteps


def workspace(model: RSSM, rows: int, action_dim: int, like: torch.Tensor,
              reuse: Optional[Workspace] = None) -> Workspace:
    """Buffers for `rows` candidates (reuse: a previous workspace, returned as is where it fits)."""
    key = (rows, action_dim, like.dtype, like.device, model.z_dim, model.deter_dim,
           *(m.out_features for m in (model.embed_za[0], model.prior_net[0], model.reward_net[0], model.reward_net[2])))
    if reuse is not None and reuse.key == key:
        return reuse
    Dz, Dh, He = model.z_dim, model.deter_dim, model.embed_za[0].out_features
    p1, r1, r2 = model.prior_net[0], model.reward_net[0], model.reward_net[2]
    cx, ch, cz, ca = slice(0, He), slice(He + 1, He + 1 + Dh), slice(He + 1 + Dh, He + 1 + Dh + Dz), \
        slice(He + 1 + Dh + Dz, He + 1 + Dh + Dz + action_dim)
    S = like.new_empty(2, rows, He + 1 + Dh + Dz + action_dim + 1)
    S[:, :, He], S[:, :, -1] = 1, 1
    views = tuple(StepViews(prev[:, ca], prev[:, cx], prev[:, cz.start:], prev[:, :ch.stop], prev[:, He:ch.stop],
                            prev[:, :He + 1], prev[:, ch], cur[:, ch], cur[:, He:ch.stop], cur[:, cz], cur[:, He:cz.stop])
                  for prev, cur in ((S[1], S[0]), (S[0], S[1])))
    return Workspace(key, S, views, like.new_ones(rows, p1.out_features + 1), like.new_ones(rows, r1.out_features + 1),
                     *(like.new_empty(rows, d) for d in (2 * Dh, Dh, Dh, 2 * Dz, r2.out_features)),
                     like.new_empty(rows, r2.out_features),
                     ElementwiseSteps(rows, max(He, p1.out_features, r1.out_features, r2.out_features), like))


@torch.no_grad()
def imagined_reward_sum(model: RSSM, h0: torch.Tensor, z0: torch.Tensor, actions: torch.Tensor,
                        noise: Optional[torch.Tensor], weights: Optional[ImaginationWeights] = None,
                        ws: Optional[Workspace] = None) -> torch.Tensor:
    """J (N,) for actions (N, H, A) from s_0 = (h0, z0) (one row, or N); noise (H, N, Dz) or None for the
    prior means; weights: imagination_weights(model), prepared here when not given; ws: workspace(...) to compute
    in, allocated here when not given."""
    w = weights if weights is not None else imagination_weights(model)
    N, H, A = actions.shape
    ws = workspace(model, N, A, h0, reuse=ws)
    first = ws.views[0]                              # s_0 goes where the first step reads s_{k-1}
    first.h_prev.copy_(h0.expand(N, -1))
    first.z_a_1[:, :model.z_dim].copy_(z0.expand(N, -1))
    ws.hidden_sum.zero_()
    ops, P, Y = ws.ops, ws.prior_in, ws.reward_in
    P_hidden, Y_hidden, mu = P[:, :-1], Y[:, :-1], ws.prior_out[:, :model.z_dim]
    # Every layer reads a contiguous run of the state row that includes a ones column, and its weight carries
    # the bias in that column (see ImaginationWeights); the r and u gates' input and hidden parts sum in one matmul.
    for k in range(H):
        v = ws.views[k % 2]
        v.a.copy_(actions[:, k])
        ops.elu_(torch.mm(v.z_a_1, w.embed, out=v.x))                            # x_k
        ops.gru_(v.h, torch.mm(v.x_1_h, w.gru_ru, out=ws.ru), torch.mm(v.x_1, w.gru_in, out=ws.gi_n),
                 torch.mm(v.one_h, w.gru_hn, out=ws.gh_n), v.h_prev)             # h_k
        ops.elu_(torch.mm(v.one_h_new, w.prior1, out=P_hidden))
        torch.mm(P, w.prior2, out=ws.prior_out)                                  # (mu, raw std)
        if noise is None:
            v.z.copy_(mu)
        else:
            ops.sample_(v.z, ws.prior_out, noise[k], model.min_std)              # z_k = mu + sigma eps_k
        ops.elu_(torch.mm(v.one_h_z_new, w.reward1, out=Y_hidden))
        ops.add_elu_(ws.hidden_sum, torch.mm(Y, w.reward2, out=ws.reward_hidden))
    r3 = model.reward_net[4]
    return torch.addmv(r3.bias.mul(H), ws.hidden_sum, r3.weight[0])
