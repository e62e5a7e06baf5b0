"""Noisy top-k gating (Shazeer et al. 2017), forward and backward, in float64.

For tokens x [T, d] and parameters w, w_noise [E, d], b [E], with fixed standard normal
draws eps [T, E] (the C++ test hands the same draws to the router through its test hook):
  clean = x @ w^T + b                  raw = x @ w_noise^T          sd = softplus(raw)
  H = clean + eps * sd  (training)     H = clean  (evaluation)
  keep the top k of H per token, gates G = softmax over the kept H (0 elsewhere)  [T, E]
  importance = CV^2(sum_t G[t, :])
  load       = CV^2(sum_t P[t, :]),  P[t, i] = Phi((clean_i - kth_excluding(H_t, k, i)) / sd_i)
               (kth_excluding: the k-th largest of H_t without component i; P = 1 when k = E)
  aux = E * sum_i f_i P_i with f_i = tokens routed to i / (T k), P_i = mean_t G[t, i]
        (f is a count: no gradient through it)
  z   = mean_t logsumexp(clean_t)^2
  CV^2 = population variance / mean^2.
Loss = sum(G * dg) + imp_coef * importance + load_coef * load + aux_coef * aux + z_coef * z,
gradients with respect to x, w, w_noise and b. Saved for training and evaluation mode.
"""
import torch
import torch.nn.functional as F
from fixture_io import save

T, D, E, K = 9, 5, 6, 2
IMP_COEF, LOAD_COEF, AUX_COEF, Z_COEF = 0.7, 0.9, 0.3, 0.05


def cv2(v):
    m = v.mean()
    return ((v - m) ** 2).mean() / m ** 2


def noisy_topk(x, w, w_noise, b, eps, training):
    clean = x @ w.T + b
    sd = F.softplus(x @ w_noise.T)
    H = clean + eps * sd if training else clean
    top_vals, top_idx = H.topk(min(K + 1, E), dim=1)
    kept = torch.full_like(H, float("-inf")).scatter(1, top_idx[:, :K], top_vals[:, :K])
    G = torch.softmax(kept, dim=1)
    normal = torch.distributions.Normal(0.0, 1.0)
    if K < E:
        is_in = torch.zeros_like(H, dtype=torch.bool).scatter(1, top_idx[:, :K], True)
        thr_in = top_vals[:, K:K + 1]  # i is kept: the (k+1)-th value is the k-th without i
        thr_out = top_vals[:, K - 1:K]  # i is not kept: the k-th value
        P = torch.where(is_in, normal.cdf((clean - thr_in) / sd),
                        normal.cdf((clean - thr_out) / sd))
    else:
        P = torch.ones_like(H)
    counts = (G > 0).to(x.dtype).sum(0).detach()
    f = counts / (T * K)
    losses = {
        "importance": cv2(G.sum(0)),
        "load": cv2(P.sum(0)),
        "aux": E * (f * G.mean(0)).sum(),
        "z": (torch.logsumexp(clean, dim=1) ** 2).mean(),
    }
    return G, top_idx[:, :K], losses


def main(out):
    x = torch.randn(T, D, dtype=torch.float64, requires_grad=True)
    w = (0.8 * torch.randn(E, D, dtype=torch.float64)).requires_grad_(True)
    w_noise = (0.5 * torch.randn(E, D, dtype=torch.float64)).requires_grad_(True)
    b = (0.3 * torch.randn(E, dtype=torch.float64)).requires_grad_(True)
    eps = torch.randn(T, E, dtype=torch.float64)
    dg = torch.randn(T, E, dtype=torch.float64)
    tensors = {"x": x, "w": w, "w_noise": w_noise, "b": b, "eps": eps, "dg": dg,
               "coefs": torch.tensor([IMP_COEF, LOAD_COEF, AUX_COEF, Z_COEF], dtype=torch.float64),
               "sizes": torch.tensor([T, D, E, K], dtype=torch.int64)}
    for mode, training in (("train", True), ("eval", False)):
        G, idx, L = noisy_topk(x, w, w_noise, b, eps, training)
        loss = ((G * dg).sum() + IMP_COEF * L["importance"] + LOAD_COEF * L["load"]
                + AUX_COEF * L["aux"] + Z_COEF * L["z"])
        dx, dw, dwn, db = torch.autograd.grad(loss, [x, w, w_noise, b])
        tensors.update({f"{mode}.gates": G, f"{mode}.experts": idx.to(torch.int64),
                        f"{mode}.losses": torch.stack([L["importance"], L["load"], L["aux"],
                                                       L["z"]]),
                        f"{mode}.dx": dx, f"{mode}.dw": dw, f"{mode}.dw_noise": dwn,
                        f"{mode}.db": db})
    save(out, "noisy_topk", tensors)
