"""Embedding lookup (torch.nn.functional.embedding) and its table gradient, in float64.

The ids repeat (3 appears three times, 0 twice), so d_table rows accumulate.
"""
import torch
import torch.nn.functional as F
from fixture_io import save


def main(out):
    V, C = 11, 6
    ids = torch.tensor([3, 0, 10, 3, 7, 0, 3, 5, 1], dtype=torch.int64)
    table = torch.randn(V, C, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(len(ids), C, dtype=torch.float64)
    y = F.embedding(ids, table)
    (d_table,) = torch.autograd.grad(y, [table], dy)
    save(out, "embedding", {"ids": ids, "table": table, "dy": dy, "y": y, "d_table": d_table})
