"""Linear layer y = x @ w^T + b (torch.nn.functional.linear), forward and backward in float64."""
import torch
import torch.nn.functional as F
from fixture_io import save


def main(out):
    N, C, OC = 5, 7, 4
    x = torch.randn(N, C, dtype=torch.float64, requires_grad=True)
    w = torch.randn(OC, C, dtype=torch.float64, requires_grad=True)
    b = torch.randn(OC, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(N, OC, dtype=torch.float64)
    y = F.linear(x, w, b)
    dx, dw, db = torch.autograd.grad(y, [x, w, b], dy)
    y_nobias = F.linear(x, w)
    save(out, "linear", {"x": x, "w": w, "b": b, "dy": dy, "y": y, "y_nobias": y_nobias,
                         "dx": dx, "dw": dw, "db": db})
