"""2-D max pooling (torch.nn.functional.max_pool2d, no padding) forward and backward in float64.

Inputs are multiples of 1/4 in a small range, so windows hold ties: the gradient goes to the
first maximum in row-major window order, in torch as in oneDNN. Activations saved NHWC; one
group per config, "<config>.<tensor>", with "<config>.geometry" = [kernel, stride].
"""
import torch
import torch.nn.functional as F
from fixture_io import save

# name: (B, C, K, stride, H, W)
CONFIGS = {
    "k2s2": (2, 3, 2, 2, 6, 5),      # odd width: the last column is dropped
    "k3s2": (2, 4, 3, 2, 7, 7),      # overlapping windows
    "k3s1": (1, 5, 3, 1, 6, 8),
}


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


def main(out):
    tensors = {}
    for name, (B, C, K, S, H, W) in CONFIGS.items():
        x = (torch.randint(-6, 7, (B, C, H, W)).to(torch.float64) / 4).requires_grad_(True)
        y = F.max_pool2d(x, K, S)
        dy = torch.randn_like(y)
        (dx,) = torch.autograd.grad(y, [x], dy)
        tensors.update({f"{name}.{k}": v for k, v in {
            "x": nhwc(x), "dy": nhwc(dy), "y": nhwc(y), "dx": nhwc(dx),
            "geometry": torch.tensor([K, S], dtype=torch.int64)}.items()})
    save(out, "pool2d", tensors)
