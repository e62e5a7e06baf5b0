#!/usr/bin/env python3
"""Interoperability with Python's safetensors package (run by tests/test_safetensors.cpp).

Usage: check_safetensors_interop.py OURS [NUMPY_OUT TORCH_OUT]

Loads OURS, written by moe::io::save_safetensors, with safetensors.numpy (and the bf16
tensor with safetensors.torch, since numpy has no bfloat16) and checks every value and the
metadata. Then writes NUMPY_OUT with safetensors.numpy.save_file and TORCH_OUT (bf16) with
safetensors.torch.save_file, which the C++ test reads back with our reader. All values are
exact in their dtype, so both sides compare with ==. Exits non-zero with a message on the
first mismatch.
"""
import pathlib
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import save_file as torch_save_file


def expect_equal(name, got, want):
    if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
        sys.exit(f"{name}: got {got.dtype}{list(got.shape)} {got.tolist()}, "
                 f"want {want.dtype}{list(want.shape)} {want.tolist()}")


def check_ours(path):
    want = {
        "f32": (np.arange(21, dtype=np.float32) * np.float32(0.25) - np.float32(2)).reshape(3, 7),
        "f64": ((np.arange(120, dtype=np.float64) - 56) / 8).reshape(2, 3, 4, 5),
        "i32": np.array([-1, 0, 2**31 - 1, -2**31], dtype=np.int32),
        "i64": np.array([[-1, 2**40], [-2**63, 2**63 - 1]], dtype=np.int64),
        "u8": np.array([0, 1, 127, 128, 254, 255], dtype=np.uint8),
        "empty": np.zeros((0,), dtype=np.float32),
        "scalar": np.array(3.25, dtype=np.float64),
    }
    # Everything but the bf16 tensor through numpy's front end.
    with safe_open(path, framework="np") as f:
        keys = set(f.keys())
        if keys != set(want) | {"bf16"}:
            sys.exit(f"tensor names {sorted(keys)}")
        meta = f.metadata()
        for name, value in want.items():
            expect_equal(name, f.get_tensor(name), value)
    if meta != {"config": '{"dim": 4}', "step": "12", "unicode": "h\u00e9llo"}:
        sys.exit(f"metadata {meta}")
    with safe_open(path, framework="pt") as f:
        bf16 = f.get_tensor("bf16")
    if bf16.dtype != torch.bfloat16:
        sys.exit(f"bf16: dtype {bf16.dtype}")
    expect_equal("bf16", bf16.float().numpy(),
                 np.array([1.5, -2, 0.0078125, 256, -0.5], dtype=np.float32))


def write_numpy(path):
    tensors = {
        "np_f32": (np.arange(10, dtype=np.float32) * np.float32(0.5) - np.float32(1)).reshape(2, 5),
        "np_f64": np.array([1 / 3, -2.5, 1e300], dtype=np.float64),
        "np_i64": np.array([-5, 0, 2**62], dtype=np.int64),
        "np_i32": np.array([[1, -2], [3, -4]], dtype=np.int32),
        "np_u8": np.array([0, 200, 255], dtype=np.uint8),
        "np_scalar": np.array(7.5, dtype=np.float32),
        "np_empty": np.zeros((0, 3), dtype=np.float64),
    }
    np_save_file(tensors, path, metadata={"writer": "numpy", "step": "34"})
    # Round trip through numpy as well, so a writer bug cannot hide behind our reader.
    back = np_load_file(path)
    for name, value in tensors.items():
        expect_equal(name, back[name], value)


def write_torch(path):
    tensors = {
        "pt_bf16": torch.tensor([[1, -0.5, 0.25], [3.5, -8, 1024]], dtype=torch.bfloat16),
        "pt_f32": torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float32),
    }
    torch_save_file(tensors, path, metadata={"writer": "torch"})


def main():
    if len(sys.argv) not in (2, 4):
        sys.exit(__doc__)
    ours = pathlib.Path(sys.argv[1])
    numpy_out = sys.argv[2] if len(sys.argv) == 4 else str(ours.with_suffix(".numpy.safetensors"))
    torch_out = sys.argv[3] if len(sys.argv) == 4 else str(ours.with_suffix(".torch.safetensors"))
    check_ours(str(ours))
    write_numpy(numpy_out)
    write_torch(torch_out)
    print(f"interop ok: read {ours}, wrote {numpy_out} and {torch_out}")


if __name__ == "__main__":
    main()
