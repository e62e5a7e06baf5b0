"""A tiny fixture that checks the fixture pipeline itself: y = x @ w^T."""
import torch
from fixture_io import save


def main(out):
    x = torch.randn(3, 4, dtype=torch.float64)
    w = torch.randn(5, 4, dtype=torch.float64)
    save(out, "smoke", {"x": x, "w": w, "y": x @ w.T})
