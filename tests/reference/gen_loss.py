"""Losses from PyTorch in float64: cross_entropy(ignore_index=-1) with two ignored rows,
binary_cross_entropy_with_logits with soft and hard targets, mse_loss. Each gradient is for
an upstream d_loss of 0.7, so the scaling by d_loss is part of what is checked.
"""
import torch
import torch.nn.functional as F
from fixture_io import save

D_LOSS = 0.7


def main(out):
    d_loss = torch.tensor(D_LOSS, dtype=torch.float64)
    tensors = {"d_loss": d_loss}

    N, V = 7, 10
    logits = (torch.randn(N, V, dtype=torch.float64) * 2).requires_grad_(True)
    targets = torch.tensor([3, -1, 0, 9, -1, 4, 4], dtype=torch.int64)
    loss = F.cross_entropy(logits, targets, ignore_index=-1)
    (d_logits,) = torch.autograd.grad(loss, [logits], d_loss)
    tensors.update({"ce_logits": logits, "ce_targets": targets, "ce_loss": loss,
                    "ce_probs": torch.softmax(logits, dim=1), "ce_d_logits": d_logits})

    z = (torch.randn(13, dtype=torch.float64) * 4).requires_grad_(True)
    y = torch.rand(13, dtype=torch.float64)
    y[:4] = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    loss = F.binary_cross_entropy_with_logits(z, y)
    (dz,) = torch.autograd.grad(loss, [z], d_loss)
    tensors.update({"bce_logits": z, "bce_targets": y, "bce_loss": loss, "bce_d_logits": dz})

    pred = torch.randn(11, dtype=torch.float64, requires_grad=True)
    target = torch.randn(11, dtype=torch.float64)
    loss = F.mse_loss(pred, target)
    (dp,) = torch.autograd.grad(loss, [pred], d_loss)
    tensors.update({"mse_pred": pred, "mse_target": target, "mse_loss": loss, "mse_d_pred": dp})
    save(out, "loss", tensors)
