"""Switch routing (Fedus et al. 2021) with a capacity limit that drops tokens, in float64.

For tokens x [T, d] and parameters w [E, d], b [E]:
  logits = x @ w^T + b,  p = softmax(logits)  [T, E]
  each token picks e_t = argmax p_t with weight p_t[e_t] (not renormalised)
  capacity = ceil(cf * T / E); an expert offered more tokens keeps `capacity` of them:
    drop policy "probability": the highest p_t[e_t] (ties: lower token first)
    drop policy "position":    the first tokens
  a dropped token gets no expert (expert -1, weight 0): the residual path carries it.
  aux = E * sum_i f_i P_i, f_i = kept tokens of expert i / T (a count, no gradient),
        P_i = mean_t p[t, i]
  z   = mean_t logsumexp(logits_t)^2
  importance = CV^2(sum_t gate[t, :]) over the chosen weights before capacity
Loss = sum_t dw_t * weight_t + aux_coef * aux + z_coef * z + imp_coef * importance,
gradients with respect to x, w and b, for both drop policies.
"""
import math

import torch
from fixture_io import save

T, D, E = 16, 5, 4
CF = 1.0
AUX_COEF, Z_COEF, IMP_COEF = 0.4, 0.05, 0.3


def cv2(v):
    m = v.mean()
    return ((v - m) ** 2).mean() / m ** 2


def switch(x, w, b, policy):
    logits = x @ w.T + b
    p = torch.softmax(logits, dim=1)
    top_p, top_e = p.max(dim=1)
    cap = math.ceil(CF * T / E)
    keep = torch.zeros(T, dtype=torch.bool)
    for e in range(E):
        toks = [t for t in range(T) if top_e[t] == e]
        if policy == "probability":
            toks.sort(key=lambda t: (-top_p[t].item(), t))
        for t in toks[:cap]:
            keep[t] = True
    expert = torch.where(keep, top_e, torch.full_like(top_e, -1))
    weight = torch.where(keep, top_p, torch.zeros_like(top_p))
    counts = torch.tensor([float((expert == e).sum()) for e in range(E)], dtype=x.dtype)
    gate = torch.zeros_like(p).scatter(1, top_e[:, None], top_p[:, None])
    losses = {
        "aux": E * (counts / T * p.mean(0)).sum(),
        "z": (torch.logsumexp(logits, dim=1) ** 2).mean(),
        "importance": cv2(gate.sum(0)),
    }
    return expert, weight, losses, cap


def main(out):
    x = torch.randn(T, D, dtype=torch.float64, requires_grad=True)
    w = torch.randn(E, D, dtype=torch.float64, requires_grad=True)
    # Expert 0 is favoured, so it is offered more than its capacity of 4 and drops tokens.
    b = torch.tensor([2.5, 0.0, -0.3, 0.2], dtype=torch.float64, requires_grad=True)
    dw = torch.randn(T, dtype=torch.float64)
    tensors = {"x": x, "w": w, "b": b, "dw": dw,
               "coefs": torch.tensor([AUX_COEF, Z_COEF, IMP_COEF, CF], dtype=torch.float64),
               "sizes": torch.tensor([T, D, E], dtype=torch.int64)}
    for policy in ("probability", "position"):
        expert, weight, L, cap = switch(x, w, b, policy)
        dropped = int((expert < 0).sum())
        assert dropped > 0, "the fixture must drop tokens"
        loss = ((dw * weight).sum() + AUX_COEF * L["aux"] + Z_COEF * L["z"]
                + IMP_COEF * L["importance"])
        gx, gw, gb = torch.autograd.grad(loss, [x, w, b])
        tensors.update({f"{policy}.expert": expert.to(torch.int64), f"{policy}.weight": weight,
                        f"{policy}.losses": torch.stack([L["aux"], L["z"], L["importance"]]),
                        f"{policy}.dx": gx, f"{policy}.dw": gw, f"{policy}.db": gb})
    # The two policies must keep different tokens, or the test could not tell them apart.
    assert not torch.equal(tensors["probability.expert"], tensors["position.expert"])
    save(out, "switch", tensors)
