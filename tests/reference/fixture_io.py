"""Saving fixtures: a dict of tensors to OUTDIR/NAME.safetensors, in float64."""
import pathlib

import torch
from safetensors.torch import save_file


def save(outdir: pathlib.Path, name: str, tensors: dict):
    clean = {}
    for key, value in tensors.items():
        t = torch.as_tensor(value)
        if t.is_floating_point():
            t = t.to(torch.float64)
        clean[key] = t.detach().contiguous()
    save_file(clean, str(outdir / f"{name}.safetensors"))
