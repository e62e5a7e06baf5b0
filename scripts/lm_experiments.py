#!/usr/bin/env python3
"""Runs the language-recipe experiments and writes their tables (docs/results.md has the
full-size figures and the commands).

  a. MoE (8 experts, top-2) against a dense model with the same active parameters and one
     with the same total parameters, on the same tokens.
  b. Assigned routing by fortunes topic against learned softmax_topk routing, on four topics:
     per-domain validation loss, gate accuracy, usage heatmaps.
  c. Routers at equal steps: softmax_topk, switch, noisy_topk, sigmoid_bias, hash.

Usage: scripts/lm_experiments.py [--small] [--only a,b,c] [--out DIR] [--moe PATH]
  --small   a few steps of a tiny model: checks that every command runs (used by ctest)
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = ROOT / "recipes" / "lm" / "moe_fortunes.json"
FORTUNES = "/usr/share/games/fortunes"
TOPICS = ["computers", "politics", "science", "songs-poems"]

SMALL = ["model.vocab_size=512", "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
         "model.seq_len=32", "model.d_ff=64", "moe.d_expert=32", "train.steps=12",
         "train.batch_size=4", "train.warmup_steps=2", "train.log_every=4", "train.eval_every=0",
         "train.eval_windows=4", "train.threads=2", "train.tensorboard=false"]


def run(cmd, log):
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                 f"see {log}:\n{pathlib.Path(log).read_text()[-2000:]}")
    return time.time() - start


def train_and_eval(args, name, sets, inspect=False, data=None):
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    # --overwrite: a rerun of the experiments replaces the earlier runs of the same name.
    cmd = [args.moe, "train", str(BASE), "--overwrite", "--set", f"out_dir={json.dumps(str(out))}"]
    for s in (SMALL if args.small else []) + sets:
        cmd += ["--set", s]
    seconds = run(cmd, out / "train.log")
    windows = "2" if args.small else "32"
    eval_cmd = [args.moe, "eval", str(out), "--json", "--windows", windows]
    subprocess.run(eval_cmd, check=True, stdout=open(out / "eval.json", "w"))
    result = json.loads((out / "eval.json").read_text())
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in metrics if "loss" in m][-1]
    result["train_loss"] = last["loss"]
    result["load_imbalance"] = last.get("load_imbalance")
    result["seconds"] = seconds
    params = subprocess.run([args.moe, "info", str(out / "checkpoint.safetensors")],
                            check=True, capture_output=True, text=True).stdout
    result["params"] = count_params(params)
    if inspect:
        run([args.moe, "inspect", str(out), "--out", str(out), "--windows", windows],
            out / "inspect.log")
    return result


def count_params(info_text, n_experts=8, top_k=2):
    """(total, active) parameters from `moe info` output (NAME DTYPE [d0, d1, ...]): active
    counts top_k of the n_experts routed experts, as a token sees them."""
    total = experts = 0
    for line in info_text.splitlines():
        m = re.match(r"^(\S+)\s+f32\s+\[(.*)\]$", line.strip())
        if m and not m.group(1).startswith("optim."):
            n = 1
            for d in m.group(2).split(","):
                if d.strip():
                    n *= int(d)
            total += n
            if ".moe.experts." in m.group(1):
                experts += n
    return total, total - experts + experts * top_k // n_experts


def experiment_a(args):
    d_expert = 32 if args.small else 256
    runs = [("moe 8x top-2", "a_moe", []),
            ("dense, same active", "a_dense_active", ["model.ffn=dense", f"model.d_ff={2 * d_expert}"]),
            ("dense, same total", "a_dense_total", ["model.ffn=dense", f"model.d_ff={8 * d_expert}"])]
    rows = ["| model | parameters | active per token | train loss | validation loss | perplexity | time (s) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, name, sets in runs:
        r = train_and_eval(args, name, sets)
        rows.append(f"| {label} | {r['params'][0]:,} | {r['params'][1]:,} | {r['train_loss']:.4f} | {r['loss']:.4f} | "
                    f"{r['perplexity']:.2f} | {r['seconds']:.0f} |")
    return "## a. MoE against dense models\n\n" + "\n".join(rows) + "\n"


def oracle_eval(args, name):
    """Validation of an assigned-router run with every token routed by its true topic."""
    out = args.out / name
    windows = "2" if args.small else "32"
    text = subprocess.run([args.moe, "eval", str(out), "--json", "--windows", windows,
                           "--route-by-label"], check=True, capture_output=True, text=True).stdout
    return json.loads(text)


def experiment_b(args):
    data = ":".join(f"{FORTUNES}/{t}" for t in TOPICS)
    common = [f"data.path={json.dumps(data)}"]
    learned = train_and_eval(args, "b_learned", common, inspect=True)
    mapping = json.dumps([[2 * i, 2 * i + 1] for i in range(len(TOPICS))])
    assigned_sets = common + ["moe.router=assigned", f"moe.domain_experts={mapping}",
                              "moe.aux_loss_coef=0"]
    runs = [("assign_loss_coef 1", train_and_eval(args, "b_assigned", assigned_sets, inspect=True),
             oracle_eval(args, "b_assigned")),
            ("assign_loss_coef 0.1",
             train_and_eval(args, "b_assigned_coef01", assigned_sets + ["moe.assign_loss_coef=0.1"],
                            inspect=True),
             oracle_eval(args, "b_assigned_coef01"))]
    rows = ["| domain | learned softmax_topk | " + " | ".join(
                f"assigned ({label}): gate-routed / label-routed / gate accuracy" for label, _, _ in runs) + " |",
            "| --- | ---: | " + " | ".join("---:" for _ in runs) + " |"]
    nan = float("nan")
    for i, dl in enumerate(learned["domains"]):
        cells = [f"{a['domains'][i].get('loss', nan):.4f} / {o['domains'][i].get('loss', nan):.4f} / "
                 f"{a['domains'][i].get('gate_accuracy', nan):.3f}" for _, a, o in runs]
        rows.append(f"| {dl['domain']} | {dl.get('loss', nan):.4f} | " + " | ".join(cells) + " |")
    cells = [f"{a['loss']:.4f} / {o['loss']:.4f} / {a.get('gate_accuracy', nan):.3f}" for _, a, o in runs]
    rows.append(f"| all | {learned['loss']:.4f} | " + " | ".join(cells) + " |")
    train_rows = [f"training loss at the last step: learned {learned['train_loss']:.4f}, " +
                  ", ".join(f"assigned ({label}) {a['train_loss']:.4f}" for label, a, _ in runs)]
    return ("## b. Assigned routing by topic against learned routing\n\n"
            f"Topics {', '.join(TOPICS)}; assigned maps topic i to experts {mapping}. Validation "
            "loss per topic; for assigned, routed by the gate (as at inference), routed by the true "
            "topic (`moe eval --route-by-label`, an oracle gate), and the gate's accuracy.\n\n"
            + "\n".join(rows) + "\n\n" + train_rows[0] + ".\n\nUsage heatmaps (one per MoE layer): "
            f"`{args.out / 'b_learned'}/routing_layer*.png`, "
            f"`{args.out / 'b_assigned'}/routing_layer*.png`.\n")


def experiment_c(args):
    routers = [("softmax_topk", []), ("switch", ["moe.top_k=1"]), ("noisy_topk", []),
               ("sigmoid_bias", []), ("hash", [])]
    rows = ["| router | validation loss | perplexity | load max/mean (last step) | time (s) |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for router, extra in routers:
        r = train_and_eval(args, f"c_{router}", [f"moe.router={router}"] + extra)
        rows.append(f"| {router} | {r['loss']:.4f} | {r['perplexity']:.2f} | "
                    f"{r['load_imbalance']:.2f} | {r['seconds']:.0f} |")
    return ("## c. Routers at equal steps\n\n(switch routes top-1, the others top-2)\n\n"
            + "\n".join(rows) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true")
    p.add_argument("--only", default="a,b,c")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "experiments")
    p.add_argument("--moe", default=str(ROOT / "build" / "moe"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {"a": experiment_a, "b": experiment_b, "c": experiment_c}
    text = ""
    for key in args.only.split(","):
        if key not in parts:
            sys.exit(f"--only: unknown experiment '{key}' (a, b or c)")
        section = parts[key](args)
        print(section, flush=True)
        text += section + "\n"
    (args.out / "results.md").write_text(text)
    print(f"tables written to {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
