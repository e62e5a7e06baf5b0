#!/usr/bin/env python3
"""Makes every PyTorch fixture: runs main(outdir) of each gen_*.py beside this file.

Usage: make_fixtures.py OUTDIR [NAME ...]   (NAME: run only gen_NAME.py)

Each generator writes OUTDIR/<name>.safetensors with inputs, parameters, outputs and
gradients computed by PyTorch in float64, which the C++ tests read with our own reader.
"""
import importlib.util
import pathlib
import sys
import time

import torch


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    only = set(sys.argv[2:])
    here = pathlib.Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    torch.set_num_threads(1)
    for script in sorted(here.glob("gen_*.py")):
        name = script.stem[len("gen_"):]
        if only and name not in only:
            continue
        start = time.time()
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        torch.manual_seed(0)
        module.main(out)
        print(f"fixture {name}: {time.time() - start:.2f}s")


if __name__ == "__main__":
    main()
