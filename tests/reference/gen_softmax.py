"""Row-wise softmax forward and backward, with two masked (-inf) logits."""
import torch
from fixture_io import save


def main(out):
    x = 2.0 * torch.randn(5, 11, dtype=torch.float64)
    x[1, 3] = float("-inf")
    x[4, 0] = float("-inf")
    x.requires_grad_(True)
    dy = torch.randn(5, 11, dtype=torch.float64)
    y = torch.softmax(x, dim=-1)
    (dx,) = torch.autograd.grad(y, x, dy)
    save(out, "softmax", {"x": x, "dy": dy, "y": y, "dx": dx})
