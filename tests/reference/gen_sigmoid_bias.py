"""Sigmoid routing with a selection bias (DeepSeek-V3), forward and backward, in float64.

For tokens x [T, d], parameters w [E, d], b [E] and the selection bias sb [E]:
  logits = x @ w^T + b,  s = sigmoid(logits)  [T, E]
  choice score c = s + sb (the bias only chooses)
  group-limited routing (n_groups > 1): experts split into n_groups groups of E / n_groups;
    a group's score is the sum of its top-2 choice scores (top-1 for groups of one);
    keep the topk_groups best groups, choose the top k of c among their experts
  weights = s of the chosen experts (unbiased), divided by their sum when renormalize,
    times route_scale
  aux = E * sum_i f_i P_i, f_i = tokens routed to i / (T k) (no gradient),
        P_i = mean_t s[t, i] / sum_e s[t, e]
  z   = mean_t logsumexp(logits_t)^2
  importance = CV^2(sum_t weight[t, :])
Loss = sum(weight * dg) + aux_coef * aux + z_coef * z + imp_coef * importance, gradients
with respect to x, w and b (the selection bias gets none). Four cases: plain, a selection
bias that changes the choice, group-limited routing, and no renormalisation with a scale.
"""
import torch
from fixture_io import save

T, D, E = 12, 5, 8
AUX_COEF, Z_COEF, IMP_COEF = 0.4, 0.05, 0.3

CASES = {
    # name: (k, n_groups, topk_groups, renormalize, route_scale, bias scale)
    "plain": (2, 1, 1, True, 1.0, 0.0),
    "bias": (2, 1, 1, True, 1.0, 0.6),
    "group": (3, 4, 2, True, 2.5, 0.3),
    "norenorm": (2, 1, 1, False, 1.5, 0.0),
}


def cv2(v):
    m = v.mean()
    return ((v - m) ** 2).mean() / m ** 2


def choose(s, sb, k, n_groups, topk_groups):
    c = (s + sb).detach()
    if n_groups > 1:
        g = c.view(T, n_groups, E // n_groups)
        gscore = g.topk(min(2, E // n_groups), dim=-1)[0].sum(-1)
        gidx = gscore.topk(topk_groups, dim=-1)[1]
        gmask = torch.zeros(T, n_groups, dtype=torch.bool).scatter(1, gidx, True)
        emask = gmask[:, :, None].expand(T, n_groups, E // n_groups).reshape(T, E)
        c = c.masked_fill(~emask, float("-inf"))
    return c.topk(k, dim=-1)[1]


def route(x, w, b, sb, k, n_groups, topk_groups, renorm, scale):
    logits = x @ w.T + b
    s = torch.sigmoid(logits)
    idx = choose(s, sb, k, n_groups, topk_groups)
    wk = s.gather(1, idx)
    if renorm:
        wk = wk / wk.sum(-1, keepdim=True)
    wk = wk * scale
    weight = torch.zeros_like(s).scatter(1, idx, wk)
    counts = torch.zeros(E, dtype=x.dtype).scatter_add(0, idx.reshape(-1),
                                                        torch.ones(T * k, dtype=x.dtype))
    P = (s / s.sum(-1, keepdim=True)).mean(0)
    losses = {
        "aux": E * (counts / (T * k) * P).sum(),
        "z": (torch.logsumexp(logits, dim=1) ** 2).mean(),
        "importance": cv2(weight.sum(0)),
    }
    return idx, weight, losses


def main(out):
    x = torch.randn(T, D, dtype=torch.float64, requires_grad=True)
    w = torch.randn(E, D, dtype=torch.float64, requires_grad=True)
    b = (0.2 * torch.randn(E, dtype=torch.float64)).requires_grad_(True)
    sb_dir = torch.randn(E, dtype=torch.float64)
    dg = torch.randn(T, E, dtype=torch.float64)
    tensors = {"x": x, "w": w, "b": b, "dg": dg,
               "coefs": torch.tensor([AUX_COEF, Z_COEF, IMP_COEF], dtype=torch.float64),
               "sizes": torch.tensor([T, D, E], dtype=torch.int64)}
    for name, (k, ng, tg, renorm, scale, sb_scale) in CASES.items():
        sb = sb_scale * sb_dir
        idx, weight, L = route(x, w, b, sb, k, ng, tg, renorm, scale)
        unbiased = route(x, w, b, torch.zeros(E, dtype=torch.float64), k, 1, 1, renorm, scale)[0]
        ungrouped = route(x, w, b, sb, k, 1, 1, renorm, scale)[0]
        # The bias and the group limit must each change some token's choice, or the test
        # could not tell whether they are applied.
        if name == "bias":
            assert not torch.equal(idx.sort(1)[0], unbiased.sort(1)[0]), name
        if name == "group":
            assert not torch.equal(idx.sort(1)[0], ungrouped.sort(1)[0]), name
        loss = ((weight * dg).sum() + AUX_COEF * L["aux"] + Z_COEF * L["z"]
                + IMP_COEF * L["importance"])
        gx, gw, gb = torch.autograd.grad(loss, [x, w, b])
        tensors.update({
            f"{name}.config": torch.tensor([k, ng, tg, int(renorm)], dtype=torch.int64),
            f"{name}.scale": torch.tensor([scale], dtype=torch.float64),
            f"{name}.selection_bias": sb,
            f"{name}.weight": weight, f"{name}.experts": idx.to(torch.int64),
            f"{name}.losses": torch.stack([L["aux"], L["z"], L["importance"]]),
            f"{name}.dx": gx, f"{name}.dw": gw, f"{name}.db": gb})
    save(out, "sigmoid_bias", tensors)
