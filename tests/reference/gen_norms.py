"""LayerNorm (torch.nn.functional.layer_norm) and RMSNorm forward and backward.

torch 1.13 has no rms_norm, so RMSNorm is written out: x * rsqrt(mean(x^2) + eps) * w.
Row 0 is offset by +50 so a one-pass variance (E[x^2] - mean^2) would lose digits.
"""
import torch
from fixture_io import save

N, C, EPS = 6, 10, 1e-5


def main(out):
    x = torch.randn(N, C, dtype=torch.float64)
    x[0] += 50.0
    w = 1.0 + 0.5 * torch.randn(C, dtype=torch.float64)
    b = torch.randn(C, dtype=torch.float64)
    dy = torch.randn(N, C, dtype=torch.float64)
    tensors = {"x": x, "w": w, "b": b, "dy": dy, "eps": torch.tensor([EPS])}

    xl, wl, bl = (t.clone().requires_grad_(True) for t in (x, w, b))
    y = torch.nn.functional.layer_norm(xl, (C,), wl, bl, EPS)
    dx, dw, db = torch.autograd.grad(y, (xl, wl, bl), dy)
    var, mean = torch.var_mean(x, dim=-1, unbiased=False)
    tensors.update({"ln_y": y, "ln_mean": mean, "ln_rstd": torch.rsqrt(var + EPS),
                    "ln_dx": dx, "ln_dw": dw, "ln_db": db})

    xr, wr = (t.clone().requires_grad_(True) for t in (x, w))
    rstd = torch.rsqrt(xr.pow(2).mean(dim=-1, keepdim=True) + EPS)
    y = xr * rstd * wr
    dx, dw = torch.autograd.grad(y, (xr, wr), dy)
    tensors.update({"rms_y": y, "rms_rstd": rstd.squeeze(-1), "rms_dx": dx, "rms_dw": dw})
    save(out, "norms", tensors)
