#!/usr/bin/env python3
"""Runs the vision-recipe comparison and prints its table (docs/results.md holds the figures
and the command that printed them).

  MoE (conv stem + 2 MoE blocks, 8 GELU experts of 128, top-2) with four routers
  (softmax_topk, expert_choice, soft, assigned by class group) against a dense model of equal
  active size (d_ff 256 = 2 x 128) and one of equal total size (d_ff 1024 = 8 x 128), every
  one for the same steps and seeds; test accuracy from `moe eval`, the class-by-expert matrix
  of every MoE run from `moe inspect` (heatmaps in each run directory).

Usage: scripts/vision_experiments.py [--steps N] [--seeds 1,2,3] [--only NAME,...] [--out DIR]
                                     [--moe PATH] [--small]
  --small   a few steps of a tiny model: checks that every command runs
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes" / "vision"

# name: (recipe, extra --set keys)
RUNS = {
    "moe_softmax_topk": ("conv_moe.json", []),
    "moe_expert_choice": ("conv_moe.json", ["moe.router=expert_choice"]),  # top_k seats per token
    "moe_soft": ("conv_moe.json", ["moe.router=soft", "moe.slots_per_expert=6"]),
    "moe_assigned": ("conv_assigned.json", []),
    "dense_active": ("conv_dense.json", ["model.d_ff=256"]),
    "dense_total": ("conv_dense.json", ["model.d_ff=1024"]),
}

SMALL = ["model.conv_channels=[4, 8]", "model.convs_per_stage=1", "model.d_model=16",
         "train.batch_size=16", "train.warmup_steps=2", "train.log_every=5", "data.val_count=100"]


def run(cmd, log):
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                 f"see {log}:\n{pathlib.Path(log).read_text()[-2000:]}")
    return time.time() - start


def train_and_eval(args, name, seed):
    recipe, sets = RUNS[name]
    out = args.out / f"{name}_seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [args.moe, "train", str(RECIPES / recipe), "--overwrite",
           "--set", f"out_dir={json.dumps(str(out))}", "--set", f"train.seed={seed}",
           "--set", f"train.steps={args.steps}", "--set", "train.eval_every=0",
           "--set", "train.checkpoint_every=0",
           "--set", f"train.warmup_steps={max(2, min(100, args.steps // 10))}"]
    for s in (SMALL if args.small else []) + sets:
        cmd += ["--set", s]
    seconds = run(cmd, out / "train.log")
    ev = subprocess.run([args.moe, "eval", str(out), "--json"], check=True,
                        capture_output=True, text=True)
    result = json.loads(ev.stdout)
    result["seconds"] = seconds
    if name.startswith("moe"):
        ins = subprocess.run([args.moe, "inspect", str(out)], check=True, capture_output=True,
                             text=True)
        (out / "inspect.txt").write_text(ins.stdout)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--only", default=",".join(RUNS))
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "vision_experiments")
    p.add_argument("--moe", default=str(ROOT / "build" / "moe"))
    p.add_argument("--small", action="store_true")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.only.split(",")
    for n in names:
        if n not in RUNS:
            sys.exit(f"unknown run '{n}' (known: {', '.join(RUNS)})")
    rows = []
    for name in names:
        accs, secs = [], []
        for seed in seeds:
            r = train_and_eval(args, name, seed)
            accs.append(r["accuracy"])
            secs.append(r["seconds"])
            print(f"{name} seed {seed}: test accuracy {r['accuracy']:.4f}, loss {r['loss']:.4f}, "
                  f"{r['seconds']:.0f} s", flush=True)
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append((name, statistics.mean(accs), spread, min(accs), max(accs), statistics.mean(secs)))
    print(f"\n{args.steps} steps of 128 images, seeds {args.seeds}; test accuracy (10,000 images)\n")
    print("| model | mean | std | min | max | train s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, mean, sd, lo, hi, s in rows:
        print(f"| {name} | {mean:.4f} | {sd:.4f} | {lo:.4f} | {hi:.4f} | {s:.0f} |")


if __name__ == "__main__":
    main()
