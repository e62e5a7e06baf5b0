"""2-D convolution (torch.nn.functional.conv2d) forward and backward in float64.

Torch computes on NCHW; every activation is saved NHWC ([B, H, W, C]) as the C++ layer takes
it, parameters in torch's layout (weight [OC, IC, K, K], bias [OC]). One group of tensors per
config, named "<config>.<tensor>", with "<config>.geometry" = [stride, padding].
"""
import torch
import torch.nn.functional as F
from fixture_io import save

# name: (B, IC, OC, K, stride, padding, H, W)
CONFIGS = {
    "same": (2, 3, 4, 3, 1, 1, 6, 5),
    "stride2": (2, 2, 5, 3, 2, 1, 7, 6),
    "wide": (1, 4, 3, 5, 2, 2, 9, 8),
    "patch": (2, 1, 8, 4, 4, 0, 28, 28),  # patch embedding: kernel = stride = 4
}


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


def main(out):
    tensors = {}
    for name, (B, IC, OC, K, S, P, H, W) in CONFIGS.items():
        x = torch.randn(B, IC, H, W, dtype=torch.float64, requires_grad=True)
        w = torch.randn(OC, IC, K, K, dtype=torch.float64, requires_grad=True)
        b = torch.randn(OC, dtype=torch.float64, requires_grad=True)
        y = F.conv2d(x, w, b, stride=S, padding=P)
        dy = torch.randn_like(y)
        dx, dw, db = torch.autograd.grad(y, [x, w, b], dy)
        y_nobias = F.conv2d(x, w, None, stride=S, padding=P)
        tensors.update({f"{name}.{k}": v for k, v in {
            "x": nhwc(x), "w": w, "b": b, "dy": nhwc(dy), "y": nhwc(y),
            "y_nobias": nhwc(y_nobias), "dx": nhwc(dx), "dw": dw, "db": db,
            "geometry": torch.tensor([S, P], dtype=torch.int64)}.items()})
    save(out, "conv2d", tensors)
