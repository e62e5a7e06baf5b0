"""SiLU, exact GELU and the SwiGLU gate, forward and backward, from PyTorch in float64.

The inputs are normal(0, 3) with a few values in the tails (+-10, where GELU's erfc tail and
SiLU's saturation are tested) and 0. dy is the upstream gradient: the fixture's dx is the
gradient of sum(dy * y), which is what our backward computes.
"""
import torch
import torch.nn.functional as F
from fixture_io import save


def grad_of(fn, inputs, dy):
    inputs = [t.clone().requires_grad_(True) for t in inputs]
    y = fn(*inputs)
    grads = torch.autograd.grad(y, inputs, dy)
    return y.detach(), grads


def main(out):
    n = 300
    x = torch.randn(n, dtype=torch.float64) * 3
    x[:6] = torch.tensor([-10.0, -6.0, 0.0, 6.0, 10.0, -0.75], dtype=torch.float64)
    dy = torch.randn(n, dtype=torch.float64)
    silu_y, (silu_dx,) = grad_of(F.silu, [x], dy)
    gelu_y, (gelu_dx,) = grad_of(lambda t: F.gelu(t, approximate="none"), [x], dy)
    a = torch.randn(n, dtype=torch.float64) * 3
    b = torch.randn(n, dtype=torch.float64)
    swiglu_y, (swiglu_da, swiglu_db) = grad_of(lambda p, q: F.silu(p) * q, [a, b], dy)
    save(out, "activations", {
        "x": x, "dy": dy,
        "silu_y": silu_y, "silu_dx": silu_dx,
        "gelu_y": gelu_y, "gelu_dx": gelu_dx,
        "a": a, "b": b,
        "swiglu_y": swiglu_y, "swiglu_da": swiglu_da, "swiglu_db": swiglu_db,
    })
