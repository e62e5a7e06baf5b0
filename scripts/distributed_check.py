#!/usr/bin/env python3
"""Checks that `mpirun -np R moe train` trains the same model as one process.

1. Trains CONFIG for --steps steps in one process and on R ranks (mpirun), with the same
   global batch and seed, and compares the training loss of every step (relative
   difference at most --tol, 1e-4 by default).
2. Checkpoints are interchangeable: `moe eval` in one process gives the same validation
   loss for the R-rank checkpoint as for the single-process one, and both resume (one
   process, and R ranks from the single-process checkpoint) give the same next losses.
3. Evaluation: `moe eval` in one process of both final checkpoints gives the same
   validation loss: within --tol when both runs routed every step identically, within
   --eval-tol-parted (1e-2 by default) once they routed a batch differently and went their
   own ways (on the language recipe with plain sums: parted at step 23, 3.4e-3 apart).
4. With --bitwise-checkpoints (for train.reduction_groups > 1, whose sums do not depend
   on R): both final checkpoints hold the same tensors with the same bits, the optimizer's
   moments ("optim.*") included, and both validation losses are equal.
5. Prints the communication the trainer measured (bytes per step per rank, share of time).

Exit status 0 when every check passes. --svg FILE draws both loss curves (for the docs),
--json FILE writes the figures.

  scripts/distributed_check.py --moe build/moe --ranks 2 --out runs/distributed_np2
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def run(cmd, log):
    """Runs cmd, teeing nothing: output goes to the log file; returns seconds taken."""
    start = time.time()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        sys.stderr.write(open(log).read()[-4000:])
        sys.exit(f"distributed_check: command failed ({rc}): {' '.join(cmd)}\nlog: {log}")
    return time.time() - start


def losses(run_dir):
    """step -> training loss, step -> routing hash (MoE), and the last training record."""
    out, routing, last = {}, {}, None
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                out[rec["step"]] = rec["loss"]
                routing[rec["step"]] = rec.get("routing_hash")
                last = rec
    return out, routing, last


def compare(a, b, ra, rb, steps, tol):
    """Largest relative loss difference over `steps` while both runs routed every batch
    identically, and the first step whose routing differed (None if none did).

    Top-k routing is discontinuous: the batch is summed in another order on R ranks, so
    weights differ by rounding (~1e-7 relative), and once a token's two best experts are
    that close the runs route it differently and go their own ways, as two runs with
    different seeds would. Losses are compared up to that step; every step before it
    must agree within tol. With train.reduction_groups > 1 the sums are taken in an order
    that does not depend on R (kernels/grouped_reduce.h), the runs compute the same bits and
    the routing never differs (use --min-same-steps STEPS and a tiny --tol to demand it)."""
    first_diff = next((s for s in steps if ra.get(s) != rb.get(s)), None)
    same = [s for s in steps if first_diff is None or s < first_diff]
    worst = max((rel(b[s], a[s]) for s in same), default=0.0)
    return worst, first_diff, same


def checkpoint_format(path):
    """The "format" metadata of a checkpoint ("moe.cpp/lm", "moe.cpp/vision", ...)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)).get("__metadata__", {}).get("format", "")


def eval_loss(moe, ckpt, log):
    """Validation loss of a checkpoint by `moe eval` in one process: 8 windows per domain of
    a language model, the held-out validation images of an image classifier, the validation
    rows of a multi-task model."""
    held_out = checkpoint_format(ckpt) in ("moe.cpp/vision", "moe.cpp/multitask")
    extra = ["--split", "val"] if held_out else ["--windows", "8"]
    out = subprocess.run([moe, "eval", ckpt, "--json"] + extra, capture_output=True, text=True)
    with open(log, "w") as f:
        f.write(out.stdout + out.stderr)
    if out.returncode != 0:
        sys.exit(f"distributed_check: moe eval {ckpt} failed:\n{out.stderr}")
    return json.loads(out.stdout)["loss"]


def read_safetensors(path):
    """name -> (dtype, shape, raw bytes) of a .safetensors file, without the package: an
    8-byte little-endian header length, a JSON header, then the tensors' raw data."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        sys.exit(f"distributed_check: {path}: {len(blob)} bytes, too short for safetensors")
    n = int.from_bytes(blob[:8], "little")
    if 8 + n > len(blob):
        sys.exit(f"distributed_check: {path}: header length {n} past the end of the file")
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]), data[begin:end])
    return out


def compare_checkpoints(a_path, b_path):
    """Mismatches between two checkpoints, tensor by tensor and bit for bit: a list of
    messages, each naming the tensor (empty when they are identical)."""
    a, b = read_safetensors(a_path), read_safetensors(b_path)
    problems = [f"{n}: only in {a_path}" for n in sorted(set(a) - set(b))]
    problems += [f"{n}: only in {b_path}" for n in sorted(set(b) - set(a))]
    for name in sorted(set(a) & set(b)):
        (da, sa, ra), (db, sb, rb) = a[name], b[name]
        if (da, sa) != (db, sb):
            problems.append(f"{name}: {da}{list(sa)} vs {db}{list(sb)}")
        elif ra != rb:
            first = next(i for i in range(len(ra)) if ra[i] != rb[i])
            problems.append(f"{name}: bits differ (first at byte {first} of {len(ra)})")
    return problems, len(a)


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def svg_curves(path, single, multi, ranks):
    """A plain SVG line chart of the two loss curves (no plotting library needed)."""
    steps = sorted(single)
    lo = min(min(single.values()), min(multi.values()))
    hi = max(max(single.values()), max(multi.values()))
    W, H, L, B = 640, 360, 60, 40

    def xy(step, loss):
        x = L + (step - steps[0]) / max(1, steps[-1] - steps[0]) * (W - L - 20)
        y = H - B - (loss - lo) / max(1e-9, hi - lo) * (H - B - 20)
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<line x1="{L}" y1="{H - B}" x2="{W - 20}" y2="{H - B}" stroke="black"/>',
             f'<line x1="{L}" y1="20" x2="{L}" y2="{H - B}" stroke="black"/>',
             f'<text x="{W // 2}" y="{H - 8}" text-anchor="middle">step</text>',
             f'<text x="14" y="{H // 2}" transform="rotate(-90 14 {H // 2})" '
             f'text-anchor="middle">training loss</text>']
    for frac in (0, 0.5, 1):
        v = lo + frac * (hi - lo)
        y = H - B - frac * (H - B - 20)
        parts.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for s in (steps[0], steps[-1]):
        parts.append(f'<text x="{xy(s, lo).split(",")[0]}" y="{H - B + 16}" '
                     f'text-anchor="middle">{s}</text>')
    for data, colour, width, dash, label, row in (
            (single, "#1f77b4", 4, "", "1 process", 0),
            (multi, "#d62728", 1.5, ' stroke-dasharray="5,3"', f"{ranks} ranks (mpirun)", 1)):
        pts = " ".join(xy(s, data[s]) for s in steps if s in data)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                     f'stroke-width="{width}"{dash}/>')
        y = 30 + 18 * row
        parts.append(f'<line x1="{W - 190}" y1="{y}" x2="{W - 160}" y2="{y}" '
                     f'stroke="{colour}" stroke-width="{width}"{dash}/>')
        parts.append(f'<text x="{W - 152}" y="{y + 4}">{label}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moe", required=True, help="the built moe command")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "recipes",
                                                     "lm", "moe_fortunes.json"))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--resume-steps", type=int, default=10,
                    help="steps run after resuming, for the checkpoint checks")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative tolerance")
    ap.add_argument("--eval-tol-parted", type=float, default=1e-2,
                    help="relative tolerance between the two checkpoints' validation losses "
                         "when the runs' routing parted (else --tol)")
    ap.add_argument("--bitwise-checkpoints", action="store_true",
                    help="demand bit-identical final checkpoints (train.reduction_groups > 1)")
    ap.add_argument("--min-same-steps", type=int, default=5,
                    help="fail if routing differs before this many steps have run")
    ap.add_argument("--out", required=True, help="directory for the runs")
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--mpirun-flags", default="--allow-run-as-root --oversubscribe")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--svg", help="write both loss curves to this SVG file")
    ap.add_argument("--json", help="write the figures to this JSON file")
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    total = a.steps + a.resume_steps
    # Same config everywhere; one thread per rank, so R ranks use R cores.
    common = ["--set", f"train.steps={a.steps}", "--set", "train.log_every=1",
              "--set", "train.eval_every=0", "--set", "train.threads=1"]
    for s in a.set:
        common += ["--set", s]
    mpi = [a.mpirun] + a.mpirun_flags.split() + ["-np", str(a.ranks)]

    def train(ranks, out_dir, extra=()):
        cmd = (mpi if ranks > 1 else []) + [a.moe, "train", a.config] + common + \
              ["--set", f'out_dir="{out_dir}"'] + list(extra)
        return run(cmd, out_dir + ".log")

    single_dir = os.path.join(a.out, "single")
    multi_dir = os.path.join(a.out, f"ranks{a.ranks}")
    for d in (single_dir, multi_dir):
        shutil.rmtree(d, ignore_errors=True)
    t1 = train(1, single_dir)
    tr = train(a.ranks, multi_dir)
    single, r_single, _ = losses(single_dir)
    multi, r_multi, last = losses(multi_dir)
    failures = []
    if sorted(single) != list(range(1, a.steps + 1)) or sorted(multi) != sorted(single):
        failures.append(f"steps logged: 1 process {len(single)}, {a.ranks} ranks {len(multi)}")
    steps = sorted(s for s in single if s in multi)
    worst, first_diff, same = compare(single, multi, r_single, r_multi, steps, a.tol)
    print(f"1 process vs {a.ranks} ranks, {a.steps} steps of {a.config} {' '.join(a.set)}:")
    print("  step   1 process   %d ranks   rel. diff   routing" % a.ranks)
    for s in steps:
        if s <= 3 or s % 10 == 0 or s in (first_diff, (first_diff or 0) - 1):
            tag = "same" if s in same else "differs"
            print(f"  {s:4d}   {single[s]:.6f}   {multi[s]:.6f}   {rel(multi[s], single[s]):.1e}"
                  f"     {tag}")
    if first_diff is None:
        print(f"  routing identical at every step; largest relative difference {worst:.2e} "
              f"(tolerance {a.tol:g})")
    else:
        after = max(rel(multi[s], single[s]) for s in steps if s >= first_diff)
        print(f"  routing identical for steps 1-{first_diff - 1}: largest relative difference "
              f"{worst:.2e} (tolerance {a.tol:g}); from step {first_diff} a batch was routed "
              f"differently and the runs part (up to {after:.1e} relative by step {steps[-1]})")
    if worst > a.tol:
        failures.append(f"loss differs by {worst:.2e} relative while routing was identical")
    if first_diff is not None and first_diff < a.min_same_steps + 1:
        failures.append(f"routing differed already at step {first_diff}")

    # Checkpoints are interchangeable: the one saved by R ranks and the one saved by one
    # process each resume identically in one process and on R ranks.
    ck_1 = os.path.join(single_dir, "checkpoint.safetensors")
    ck_r = os.path.join(multi_dir, "checkpoint.safetensors")
    e_1 = eval_loss(a.moe, ck_1, single_dir + ".eval.log")
    e_r = eval_loss(a.moe, ck_r, multi_dir + ".eval.log")
    eval_diff = rel(e_r, e_1)
    eval_tol = 0.0 if a.bitwise_checkpoints else a.tol if first_diff is None \
        else a.eval_tol_parted
    print(f"moe eval (1 process): validation loss {e_1:.6f} of the 1-process checkpoint, "
          f"{e_r:.6f} of the {a.ranks}-rank one: rel. diff {eval_diff:.1e} "
          f"(tolerance {eval_tol:g})")
    if eval_diff > eval_tol:
        failures.append(f"validation losses differ by {eval_diff:.2e} relative "
                        f"(1 process {e_1!r}, {a.ranks} ranks {e_r!r})")
    if a.bitwise_checkpoints:
        problems, n = compare_checkpoints(ck_1, ck_r)
        if problems:
            for p in problems[:20]:
                print(f"  checkpoint mismatch: {p}")
            failures.append(f"{len(problems)} of {n} checkpoint tensors differ between 1 "
                            f"process and {a.ranks} ranks, first {problems[0]}")
        else:
            print(f"final checkpoints bit-identical: all {n} tensors, optimizer state included")
    worst_resume = 0.0
    more = ["--resume", "--set", f"train.steps={total}"]
    for origin, origin_dir in (("1-process", single_dir), (f"{a.ranks}-rank", multi_dir)):
        res1 = os.path.join(a.out, f"resume_{os.path.basename(origin_dir)}_single")
        resr = os.path.join(a.out, f"resume_{os.path.basename(origin_dir)}_ranks{a.ranks}")
        for d in (res1, resr):
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(origin_dir, d)
        train(1, res1, more)
        train(a.ranks, resr, more)
        l1, h1, _ = losses(res1)
        lr, hr, _ = losses(resr)
        after = [s for s in range(a.steps + 1, total + 1)]
        if any(s not in l1 or s not in lr for s in after):
            failures.append(f"a resumed run of the {origin} checkpoint missed steps")
            continue
        w, fd, _ = compare(l1, lr, h1, hr, after, a.tol)
        worst_resume = max(worst_resume, w)
        print(f"{origin} checkpoint resumed for steps {a.steps + 1}-{total}, 1 process vs "
              f"{a.ranks} ranks: largest rel. diff {w:.2e}"
              + ("" if fd is None else f" (routing identical until step {fd - 1})"))
        if w > a.tol:
            failures.append(f"the {origin} checkpoint resumes differently on 1 and R ranks")
        if fd == a.steps + 1:
            failures.append(f"the {origin} checkpoint routes differently at once when resumed")

    comm = {k: last.get(k) for k in ("comm_bytes_per_step", "comm_bytes_per_step_max",
                                      "comm_seconds_per_step", "compute_seconds_per_step",
                                      "comm_fraction")} if last else {}
    if comm.get("comm_bytes_per_step") is not None:
        print(f"communication on {a.ranks} ranks (last step): "
              f"{comm['comm_bytes_per_step'] / 1e6:.3f} MB sent by rank 0, "
              f"{comm['comm_bytes_per_step_max'] / 1e6:.3f} MB by the busiest rank; "
              f"{1e3 * comm['comm_seconds_per_step']:.1f} ms in communication vs "
              f"{1e3 * comm['compute_seconds_per_step']:.1f} ms computing "
              f"({100 * comm['comm_fraction']:.0f}% of the step)")
    else:
        failures.append("the R-rank run reported no communication figures")
    print(f"wall time: 1 process {t1:.1f}s, {a.ranks} ranks {tr:.1f}s (including set-up)")

    if a.svg:
        svg_curves(a.svg, single, multi, a.ranks)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"ranks": a.ranks, "steps": a.steps, "max_rel_diff": worst,
                       "first_routing_difference": first_diff, "eval_single": e_1,
                       "eval_ranks": e_r,
                       "resume_max_rel_diff": worst_resume,
                       "single": single, "multi": multi, "comm": comm}, f, indent=1)
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
