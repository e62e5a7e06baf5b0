#!/usr/bin/env python3
"""Runs the multi-task recipe's experiments and prints their tables (docs/results.md holds
the figures and the command that printed them).

  synthetic   the MMoE paper's synthetic tasks (moe make-synthetic) at task correlations
              p in {0.5, 0.9, 1.0}: test MSE of shared-bottom, OMoE, MMoE and PLE, N seeds each
              (a new data set and a new initialisation per seed), mean and 95% interval
  adult       UCI Adult (income > 50K, never married): test AUC of the four models, N seeds,
              beside scikit-learn's HistGradientBoosting per task on the same split
  movielens   MovieLens-100k (rating: RMSE; rating >= 4: AUC), likewise

Each model's gate heatmaps (`moe inspect`) are left in its first seed's run directory.
The real data sets must be prepared first: .venv/bin/python scripts/prepare_multitask_data.py

Usage: scripts/multitask_experiments.py synthetic|adult|movielens [--seeds N] [--out DIR]
                                        [--moe PATH] [--small] [--json FILE]
  --small   a few steps and seeds: checks that every command runs
"""
import argparse
import json
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from experiment_util import mean_ci95, run  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes" / "multitask"
ARCHS = ["shared_bottom", "omoe", "mmoe", "ple"]
CORRELATIONS = [0.5, 0.9, 1.0]
# Equal sizes on the synthetic tasks: MMoE and OMoE have 8 experts of 16 hidden units; PLE 2
# levels of 2 shared + 2 x 1 task experts (8 in all); the shared bottom one MLP of 8 x 16.
SYNTHETIC_SETS = {"shared_bottom": ["model.expert_hidden=128"]}
REAL_SETS = {"shared_bottom": ["model.expert_hidden=256"]}  # 8 experts x 32


def train_and_eval(args, recipe, arch, seed, out, sets=()):
    out.mkdir(parents=True, exist_ok=True)
    cmd = [args.moe, "train", RECIPES / recipe, "--overwrite",
           "--set", f"out_dir={json.dumps(str(out))}", "--set", f"train.seed={seed}",
           "--set", f"model.arch={arch}", "--set", "train.tensorboard=false"]
    if args.small:
        cmd += ["--set", "train.steps=20", "--set", "train.eval_every=0"]
    for s in sets:
        cmd += ["--set", s]
    seconds = run(cmd, out / "train.log")
    ev = subprocess.run([args.moe, "eval", out, "--json"], capture_output=True, text=True)
    if ev.returncode != 0:
        sys.exit(f"moe eval {out} failed:\n{ev.stderr}")
    result = json.loads(ev.stdout)
    result["train_seconds"] = seconds
    return result


def inspect(args, out):
    if (out / "checkpoint.safetensors").exists():
        run([args.moe, "inspect", out], out / "inspect.log")


def synthetic(args):
    results = {}
    for p in CORRELATIONS:
        for seed in range(1, args.seeds + 1):
            data = args.out / "data" / f"p{p}_seed{seed}"
            if not (data / "test.csv").exists():
                run([args.moe, "make-synthetic", "--correlation", p, "--seed", seed, "--out", data],
                    args.out / "make_synthetic.log")
            sets = [f"data.train={json.dumps(str(data / 'train.csv'))}",
                    f"data.val={json.dumps(str(data / 'val.csv'))}",
                    f"data.test={json.dumps(str(data / 'test.csv'))}"]
            for arch in ARCHS:
                out = args.out / f"p{p}" / f"{arch}_seed{seed}"
                r = train_and_eval(args, "synthetic.json", arch, seed, out,
                                   sets + SYNTHETIC_SETS.get(arch, []))
                if seed == 1 and arch != "shared_bottom":
                    inspect(args, out)
                mse = [t["mse"] for t in r["tasks"]]
                results.setdefault(str(p), {}).setdefault(arch, []).append(mse)
                print(f"p={p} seed {seed} {arch:13s} test MSE task1 {mse[0]:.4f} "
                      f"task2 {mse[1]:.4f} ({r['train_seconds']:.1f} s)", flush=True)
    print(f"\n| model | " + " | ".join(f"p = {p}: MSE task 1 | task 2" for p in CORRELATIONS) + " |")
    print("|---|" + "---|---|" * len(CORRELATIONS))
    for arch in ARCHS:
        cells = []
        for p in CORRELATIONS:
            for k in range(2):
                m, h = mean_ci95([r[k] for r in results[str(p)][arch]])
                cells.append(f"{m:.4f} ± {h:.4f}")
        print(f"| {arch} | " + " | ".join(cells) + " |")
    return results


def real(args, name):
    data = ROOT / "data" / "multitask" / name
    if not (data / "train.csv").exists():
        sys.exit(f"{data}/train.csv is missing: run .venv/bin/python "
                 f"scripts/prepare_multitask_data.py first")
    results = {}
    for seed in range(1, args.seeds + 1):
        for arch in ARCHS:
            out = args.out / name / f"{arch}_seed{seed}"
            # OMoE and the shared bottom take MMoE's recipe (the same sizes) with another arch.
            recipe = f"{name}_{'ple' if arch == 'ple' else 'mmoe'}.json"
            r = train_and_eval(args, recipe, arch, seed, out, REAL_SETS.get(arch, []))
            if seed == 1 and arch != "shared_bottom":
                inspect(args, out)
            metrics = {t["task"]: (t["auc"] if "auc" in t else t["rmse"]) for t in r["tasks"]}
            results.setdefault(arch, []).append(metrics)
            print(f"{name} seed {seed} {arch:13s} " +
                  " ".join(f"{k} {v:.4f}" for k, v in metrics.items()) +
                  f" ({r['train_seconds']:.1f} s)", flush=True)
    tasks = list(results[ARCHS[0]][0].keys())
    print(f"\n| model | " + " | ".join(tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for arch in ARCHS:
        cells = []
        for t in tasks:
            m, h = mean_ci95([r[t] for r in results[arch]])
            cells.append(f"{m:.4f} ± {h:.4f}")
        print(f"| {arch} | " + " | ".join(cells) + " |")
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("experiment", choices=["synthetic", "adult", "movielens"])
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "multitask_experiments")
    ap.add_argument("--moe", default=str(ROOT / "build" / "moe"))
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--json", type=pathlib.Path, help="write the raw results here")
    args = ap.parse_args()
    if args.seeds is None:
        args.seeds = 2 if args.small else (20 if args.experiment == "synthetic" else 5)
    args.out.mkdir(parents=True, exist_ok=True)
    results = synthetic(args) if args.experiment == "synthetic" else real(args, args.experiment)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
