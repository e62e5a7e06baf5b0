"""SwiGLU, GELU and ReLU MLPs, forward and backward, from PyTorch in float64.

SwiGLU: out = (silu(x @ w1^T) * (x @ w3^T)) @ w2^T;  GELU: out = gelu(x @ w1^T + b1) @ w2^T + b2;
ReLU: as GELU with relu. The ReLU tensors are drawn last, so the others keep their values.
"""
import torch
import torch.nn.functional as F
from fixture_io import save


def main(out):
    N, C, H = 6, 8, 12

    def param(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_(True)

    x = param(N, C)
    dy = torch.randn(N, C, dtype=torch.float64)
    w1, w3, w2 = param(H, C, scale=0.5), param(H, C, scale=0.5), param(C, H, scale=0.3)
    y = F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)
    dx, dw1, dw3, dw2 = torch.autograd.grad(y, [x, w1, w3, w2], dy)
    tensors = {"x": x, "dy": dy}
    tensors.update({"swiglu_" + k: v for k, v in {"w1": w1, "w3": w3, "w2": w2, "y": y, "dx": dx,
                                                  "dw1": dw1, "dw3": dw3, "dw2": dw2}.items()})

    g1, b1, g2, b2 = param(H, C, scale=0.5), param(H), param(C, H, scale=0.3), param(C)
    y = F.linear(F.gelu(F.linear(x, g1, b1), approximate="none"), g2, b2)
    dx, dg1, db1, dg2, db2 = torch.autograd.grad(y, [x, g1, b1, g2, b2], dy)
    tensors.update({"gelu_" + k: v for k, v in {"w1": g1, "b1": b1, "w2": g2, "b2": b2, "y": y,
                                                "dx": dx, "dw1": dg1, "db1": db1, "dw2": dg2,
                                                "db2": db2}.items()})

    r1, rb1, r2, rb2 = param(H, C, scale=0.5), param(H), param(C, H, scale=0.3), param(C)
    y = F.linear(F.relu(F.linear(x, r1, rb1)), r2, rb2)
    dx, dr1, drb1, dr2, drb2 = torch.autograd.grad(y, [x, r1, rb1, r2, rb2], dy)
    tensors.update({"relu_" + k: v for k, v in {"w1": r1, "b1": rb1, "w2": r2, "b2": rb2, "y": y,
                                                "dx": dx, "dw1": dr1, "db1": drb1, "dw2": dr2,
                                                "db2": drb2}.items()})
    save(out, "mlp", tensors)
