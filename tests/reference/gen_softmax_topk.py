"""The Mixtral form of the MoE layer in float64: softmax over experts, top-2, renormalise
the kept weights, SwiGLU experts; plus the Switch aux loss and the router z-loss.

  logits = x @ w^T + b;  p = softmax(logits);  (v, i) = topk(p, 2);  g = v / sum(v)
  y[t] = sum_j g[t, j] * expert_{i[t, j]}(x[t]),  expert(x) = (silu(x w1^T) * (x w3^T)) w2^T
  aux = E * sum_e f_e P_e  (f_e = share of the T*k choices on e, no gradient; P_e = mean_t p)
  z = mean_t logsumexp(logits_t)^2
  loss = sum(y * dy) + aux_coef * aux + z_coef * z
"""
import torch
import torch.nn.functional as F
from fixture_io import save


def main(out):
    T, d, H, E, k = 12, 8, 10, 4, 2
    aux_coef, z_coef = 0.05, 0.01

    def param(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_(True)

    x = param(T, d)
    w, b = param(E, d, scale=0.8), param(E, scale=0.3)
    w1, w3, w2 = param(E, H, d, scale=0.4), param(E, H, d, scale=0.4), param(E, d, H, scale=0.4)
    dy = torch.randn(T, d, dtype=torch.float64)

    logits = x @ w.T + b
    p = torch.softmax(logits, dim=-1)
    top_v, top_i = torch.topk(p, k, dim=-1)
    g = top_v / top_v.sum(dim=-1, keepdim=True)
    y = torch.zeros(T, d, dtype=torch.float64)
    for e in range(E):
        ye = (F.silu(x @ w1[e].T) * (x @ w3[e].T)) @ w2[e].T
        ge = (g * (top_i == e)).sum(dim=-1)
        y = y + ge[:, None] * ye
    f = F.one_hot(top_i, E).sum(dim=(0, 1)).to(torch.float64) / (T * k)
    aux = E * (f * p.mean(dim=0)).sum()
    z = (torch.logsumexp(logits, dim=-1) ** 2).mean()
    loss = (y * dy).sum() + aux_coef * aux + z_coef * z
    grads = torch.autograd.grad(loss, [x, w, b, w1, w3, w2])
    tensors = {"x": x, "w": w, "b": b, "w1": w1, "w3": w3, "w2": w2, "dy": dy, "y": y,
               "aux": aux.reshape(1), "z": z.reshape(1), "top_i": top_i.to(torch.int64),
               "coefs": torch.tensor([aux_coef, z_coef], dtype=torch.float64)}
    for name, grad in zip(["dx", "dw", "db", "dw1", "dw3", "dw2"], grads):
        tensors[name] = grad
    save(out, "softmax_topk", tensors)
