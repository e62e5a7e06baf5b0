"""Soft MoE (Puigcerver et al. 2023), forward and backward, from PyTorch in float64.

For each sequence b of L tokens X_b [L, d], with phi [d, E*S] (S slots per expert):
  logits = X_b @ phi                          [L, E*S]
  D = softmax over tokens (dim 0)             dispatch weights, each slot a mix of tokens
  C = softmax over slots  (dim 1)             combine weights, each token a mix of slots
  slots = D^T @ X_b                           [E*S, d]; slot s belongs to expert s // S
  Y[s] = SwiGLU expert (s // S) applied to slots[s]
  out_b = C @ Y                               [L, d]
Gradients of sum(out * dy) with respect to x, phi and every expert weight.
"""
import torch
import torch.nn.functional as F
from fixture_io import save


def soft_moe(x, phi, w1, w3, w2, B, L, S):
    E = w1.shape[0]
    outs = []
    for b in range(B):
        xb = x[b * L:(b + 1) * L]
        logits = xb @ phi
        D = torch.softmax(logits, dim=0)
        C = torch.softmax(logits, dim=1)
        slots = D.T @ xb
        ys = []
        for s in range(E * S):
            e = s // S
            h = F.silu(slots[s] @ w1[e].T) * (slots[s] @ w3[e].T)
            ys.append(h @ w2[e].T)
        outs.append(C @ torch.stack(ys))
    return torch.cat(outs)


def main(out):
    B, L, d, E, S, H = 2, 5, 6, 3, 2, 7

    def param(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_(True)

    x = param(B * L, d)
    phi = param(d, E * S, scale=0.6)
    w1, w3, w2 = param(E, H, d, scale=0.5), param(E, H, d, scale=0.5), param(E, d, H, scale=0.4)
    dy = torch.randn(B * L, d, dtype=torch.float64)
    y = soft_moe(x, phi, w1, w3, w2, B, L, S)
    dx, dphi, dw1, dw3, dw2 = torch.autograd.grad(y, [x, phi, w1, w3, w2], dy)
    # The same tokens seen as one group of B*L (sequence length unknown).
    y1 = soft_moe(x, phi, w1, w3, w2, 1, B * L, S)
    dx1, dphi1, dw11, dw31, dw21 = torch.autograd.grad(y1, [x, phi, w1, w3, w2], dy)
    save(out, "soft_moe", {
        "sizes": torch.tensor([B, L, d, E, S, H], dtype=torch.int64),
        "x": x, "phi": phi, "w1": w1, "w3": w3, "w2": w2, "dy": dy,
        "y": y, "dx": dx, "dphi": dphi, "dw1": dw1, "dw3": dw3, "dw2": dw2,
        "one_y": y1, "one_dx": dx1, "one_dphi": dphi1, "one_dw1": dw11, "one_dw3": dw31,
        "one_dw2": dw21,
    })
