"""MMoE (Ma et al. 2018), forward and backward, from PyTorch in float64.

K tasks share E SwiGLU experts; task k's gate is g_k = softmax(x @ W_k.T + b_k) over the
experts (dense), or over each token's top_k logits only (the prefix "topk_" runs top_k = 2:
the softmax of the kept logits, which is the full softmax renormalised over them):
  out_k[t] = sum_e g_k[t, e] * expert_e(x[t])
Gradients of sum_k sum(out_k * dy_k) with respect to x, every gate and every expert weight.
"""
import torch
import torch.nn.functional as F
from fixture_io import save


def mmoe(x, gw, gb, w1, w3, w2, top_k):
    E = w1.shape[0]
    # Every expert on every token: [E, T, d]. The C++ layer only runs kept pairs; the
    # unkept ones get weight 0 here, so the outputs and gradients are the same.
    ys = torch.stack([(F.silu(x @ w1[e].T) * (x @ w3[e].T)) @ w2[e].T for e in range(E)])
    outs = []
    for k in range(gw.shape[0]):
        logits = x @ gw[k].T + gb[k]
        if top_k:
            kept = torch.topk(logits.detach(), top_k, dim=1).indices
            mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, kept, True)
            logits = logits.masked_fill(~mask, float("-inf"))
        g = torch.softmax(logits, dim=1)  # [T, E]
        outs.append(torch.einsum("te,etd->td", g, ys))
    return outs


def main(out):
    T, d, E, K, H = 9, 6, 5, 3, 7

    def param(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_(True)

    x = param(T, d)
    gw, gb = param(K, E, d, scale=0.7), param(K, E, scale=0.3)
    w1, w3, w2 = param(E, H, d, scale=0.5), param(E, H, d, scale=0.5), param(E, d, H, scale=0.4)
    dy = torch.randn(K, T, d, dtype=torch.float64)
    tensors = {
        "sizes": torch.tensor([T, d, E, K, H], dtype=torch.int64),
        "x": x, "gate_w": gw, "gate_b": gb, "w1": w1, "w3": w3, "w2": w2, "dy": dy,
    }
    for pre, top_k in (("", 0), ("topk_", 2)):
        ys = mmoe(x, gw, gb, w1, w3, w2, top_k)
        loss = sum((y * dy[k]).sum() for k, y in enumerate(ys))
        grads = torch.autograd.grad(loss, [x, gw, gb, w1, w3, w2])
        tensors[pre + "y"] = torch.stack(ys)
        for name, g in zip(["dx", "dgate_w", "dgate_b", "dw1", "dw3", "dw2"], grads):
            tensors[pre + name] = g
    save(out, "multi_gate_moe", tensors)
